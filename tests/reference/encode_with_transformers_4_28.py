"""Encode texts as RaDialog did: transformers 4.28.1's slow LlamaTokenizer with `<IMG>` added.

Runs in the throwaway environment that make_tokenizer_golden_ids.py sets up (transformers==4.28.1,
sentencepiece, protobuf; no torch), never in the project's own. Reads {"tokenizer_dir", "texts"} as JSON
on stdin and writes {"versions", "image_token_id", "ids"} as JSON on stdout.

What it mirrors, from RaDialog's code (demo.py `init_vicuna`, test.py, finetune.py):

    LlamaTokenizer.from_pretrained("lmsys/vicuna-7b-v1.3", use_fast=False, padding_side="left", ...)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.add_special_tokens({"additional_special_tokens": ["<IMG>"]})
    tokenizer(prompt)["input_ids"]
"""

from __future__ import annotations

import json
import sys

import sentencepiece
import transformers
from transformers import LlamaTokenizer


def main() -> int:
    request = json.load(sys.stdin)
    if transformers.__version__ != "4.28.1":
        raise SystemExit(f"needs transformers 4.28.1, found {transformers.__version__}")
    tokenizer = LlamaTokenizer.from_pretrained(request["tokenizer_dir"], use_fast=False, padding_side="left")
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.add_special_tokens({"additional_special_tokens": ["<IMG>"]})
    ids = [tokenizer(text)["input_ids"] for text in request["texts"]]
    versions = {"transformers": transformers.__version__, "sentencepiece": sentencepiece.__version__}
    json.dump(
        {
            "versions": versions,
            "tokenizer_class": type(tokenizer).__name__,
            "image_token_id": tokenizer.convert_tokens_to_ids("<IMG>"),
            "ids": ids,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
