"""Write tests/data/tokenizer/golden_ids.json: this project's prompts as RaDialog's own tokenizer encoded them.

RaDialog ran transformers 4.28.1 with the slow, sentencepiece-backed `LlamaTokenizer` of Vicuna-7b v1.3 and
`<IMG>` added as an additional special token; the released LoRA adapter learnt the ids it produced. This
script renders the prompts with the project's own prompt code (radialog.prompts, radialog.chat), builds
LLaMA's tokenizer from llama-tokenizer-js (tests/reference/llama_tokenizer_files.py), and has transformers
4.28.1 itself encode them, in a throwaway virtual environment created on first use (from PyPI: transformers,
sentencepiece, protobuf; no torch). The fixture holds the texts and their ids, not the vocabulary.

Run from the repository root with the project's environment:

    .venv/bin/python tests/reference/make_tokenizer_golden_ids.py [--venv /tmp/tf428]

Checks made on the way: the rebuilt tokenizer.model reproduces llama-tokenizer-js's merge order and its
reference cases, and it encodes every plain-text piece of the prompts as llama-tokenizer-js's own encoder
does (run with node).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import llama_tokenizer_files as llama_files  # beside this script (tests/reference/)

from radialog.chat import PLAIN_LANGUAGE_PROMPT, SUMMARY_PROMPT
from radialog.prompts import (
    Conversation,
    build_correction_prompt,
    build_finding_question,
    build_image_prefix,
    build_report_prompt,
    format_predicted_findings,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

FIXTURE = REPO_ROOT / "tests" / "data" / "tokenizer" / "golden_ids.json"
REFERENCE_REQUIREMENTS = ["transformers==4.28.1", "sentencepiece", "protobuf"]
EOS = "</s>"

# Example content: any findings and report would do; these read like RaDialog's.
POSITIVE = ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
REPORT = (
    "The heart is mildly enlarged. There is a small left pleural effusion with adjacent atelectasis. "
    "A right internal jugular catheter ends in the mid SVC. No pneumothorax."
)
QUESTION_ANSWER = "Yes, there is a small left pleural effusion."
PLAIN_ANSWER = "The heart looks a little bigger than normal, and there is some fluid around the left lung."
UNUSUAL_MESSAGE = "Is the  effusion (≈2.5 cm)\non the left?\tCompare with 2019–2021 — café 🦙 镇"


def _conversation(*turns: str | None) -> str:
    """System prompt, then alternating user and assistant turns; a final None leaves the answer open."""
    conversation = Conversation()
    for i, text in enumerate(turns):
        (conversation.add_user if i % 2 == 0 else conversation.add_assistant)(text)
    return conversation.render_vicuna(eos=EOS)


def render_cases() -> list[dict[str, str]]:
    """Every kind of prompt the chat sends to a Vicuna-format model, rendered by the project's code."""
    findings = format_predicted_findings(POSITIVE)
    report_request = build_report_prompt(findings)

    def follow_up(message: str) -> str:
        # Once a report exists, each task is a new user turn after the report turn (radialog.chat).
        return _conversation(report_request, REPORT, message, None)

    cases = {
        "report": _conversation(report_request, None),
        "report_no_findings": _conversation(build_report_prompt(format_predicted_findings([])), None),
        "correction_remove": follow_up(build_correction_prompt(remove=["Pleural Effusion"])),
        "correction_add": follow_up(build_correction_prompt(add=["Edema"])),
        "correction_add_and_remove": follow_up(build_correction_prompt(remove=["Pleural Effusion"], add=["Edema"])),
        "correction_several_findings": follow_up(
            build_correction_prompt(remove=["Edema", "Pleural Effusion", "No Finding"], add=["Cardiomegaly"])
        ),
        "finding_question": follow_up(build_finding_question("Pleural Effusion")),
        "finding_question_before_report": _conversation(
            # The chat opens with the image prefix; the question's leading space is for a turn after "USER: ".
            build_image_prefix(findings) + build_finding_question("Pleural Effusion").lstrip(),
            None,
        ),
        "plain_language": follow_up(PLAIN_LANGUAGE_PROMPT),
        "summary": follow_up(SUMMARY_PROMPT),
        "multi_turn": _conversation(
            report_request,
            REPORT,
            build_finding_question("Pleural Effusion"),
            QUESTION_ANSWER,
            PLAIN_LANGUAGE_PROMPT,
            PLAIN_ANSWER,
            SUMMARY_PROMPT,
            None,
        ),
        "unusual_text": follow_up(UNUSUAL_MESSAGE),
    }
    return [{"name": name, "text": text} for name, text in cases.items()]


# Not prompts the chat renders: whitespace next to every added token, and added tokens typed into a message.
RAW_CASES = [
    {"name": "raw_whitespace_around_added_tokens", "text": "  x <IMG>  y</s>  z <s> w <unk>v\n<IMG>\t</s> "},
]


def ensure_reference_python(venv: Path) -> Path:
    """The throwaway environment's interpreter, with transformers 4.28.1 installed."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    check = [str(python), "-c", "import transformers, sentencepiece, google.protobuf; print(transformers.__version__)"]
    found = subprocess.run(check, capture_output=True, text=True)
    if found.returncode != 0 or found.stdout.strip() != "4.28.1":
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REFERENCE_REQUIREMENTS], check=True)
    return python


def encode_with_reference(python: Path, tokenizer_dir: Path, texts: list[str]) -> dict:
    request = json.dumps({"tokenizer_dir": str(tokenizer_dir), "texts": texts})
    script = HERE / "encode_with_transformers_4_28.py"
    # Nothing from the project's environment (its transformers above all) may leak into the old one.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    command = [str(python), str(script)]
    result = subprocess.run(command, input=request, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout)


_ADDED = re.compile(r"\s*<IMG>\s*|</s>|<s>|<unk>")


def check_pieces_with_node(model: bytes, cache: Path, texts: list[str]) -> int:
    """sentencepiece with the rebuilt model and llama-tokenizer-js agree on every plain-text piece of `texts`."""
    import sentencepiece

    pieces = sorted({piece for text in texts for piece in _ADDED.split(text) if piece})
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model)
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(llama_files.fetch_tarball(cache)) as archive:
            archive.extractall(scratch, filter="data")
        program = "\n".join(
            [
                "import { readFileSync } from 'node:fs';",
                "import tokenizer from './package/llama-tokenizer.js';",
                "const pieces = JSON.parse(readFileSync(0, 'utf8'));",
                "console.log(JSON.stringify(pieces.map((piece) => tokenizer.encode(piece, false, true))));",
            ]
        )
        result = subprocess.run(
            ["node", "--input-type=module", "-e", program],
            input=json.dumps(pieces),
            capture_output=True,
            text=True,
            check=True,
            cwd=scratch,
        )
    expected = json.loads(result.stdout)
    differing = [piece for piece, ids in zip(pieces, expected, strict=True) if processor.encode(piece) != ids]
    if differing:
        raise ValueError(f"sentencepiece and llama-tokenizer-js disagree on {differing[:3]}")
    return len(pieces)


def _one_case_per_line(fixture: dict) -> str:
    """Indented JSON, except that each case (name, text, ids) stays on one line: short and diffable."""
    head = {key: value for key, value in fixture.items() if key != "cases"}
    lines = [f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}," for key, value in head.items()]
    cases = ",\n".join(f"  {json.dumps(case, ensure_ascii=False)}" for case in fixture["cases"])
    return "{\n" + "\n".join(lines) + '\n "cases": [\n' + cases + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/tf428"), help="the throwaway environment")
    parser.add_argument("--cache", type=Path, default=llama_files.DEFAULT_CACHE)
    parser.add_argument("--output", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)

    cases = render_cases() + RAW_CASES
    model, reference = llama_files.build_llama_model(args.cache)
    checked = check_pieces_with_node(model, args.cache, [case["text"] for case in cases])
    python = ensure_reference_python(args.venv)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = llama_files.write_vicuna_tokenizer_dir(Path(scratch) / "vicuna-7b-v1.3", model)
        encoded = encode_with_reference(python, tokenizer_dir, [case["text"] for case in cases])
    fixture = {
        "about": (
            "Token ids of this project's RaDialog prompts under RaDialog's own tokenizer: transformers "
            f"{encoded['versions']['transformers']} slow {encoded['tokenizer_class']} "
            f"(sentencepiece {encoded['versions']['sentencepiece']}) on LLaMA-1's vocabulary, rebuilt from "
            f"{llama_files.NPM_PACKAGE}@{llama_files.NPM_VERSION}, with "
            'add_special_tokens({"additional_special_tokens": ["<IMG>"]}); ids include the leading <s>. '
            "Written by tests/reference/make_tokenizer_golden_ids.py; checked by tests/test_tokenizer_parity.py."
        ),
        "image_token_id": encoded["image_token_id"],
        "cases": [{**case, "ids": ids} for case, ids in zip(cases, encoded["ids"], strict=True)],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(_one_case_per_line(fixture), encoding="utf-8")
    total = sum(len(ids) for ids in encoded["ids"])
    print(
        f"wrote {args.output}: {len(cases)} prompts, {total} ids "
        f"({len(reference)} llama-tokenizer-js reference cases and {checked} prompt pieces checked)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
