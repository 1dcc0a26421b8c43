"""`radialog export CHECKPOINT --to DIR [--dtype float16] [--format radialog|hf] [--merge-lora]`.

`--format radialog` (the default) re-saves the checkpoint with its weights cast, e.g. halved for shipping;
`--format hf --merge-lora` writes the LLM alone, LoRA merged in, as a plain Hugging Face model directory
that a vLLM server loads (`radialog serve --engine vllm`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from radialog.engines.merged_llm import save_merged_language_model
from radialog.errors import InputError
from radialog.model.loading import DTYPES
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="re-save a checkpoint with its weights cast (float16 halves what you ship), or its LLM for vLLM",
    )
    parser.add_argument("checkpoint", help="checkpoint directory to read")
    parser.add_argument("--to", required=True, dest="destination", help="directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="stored weights (default: float16)")
    parser.add_argument(
        "--format",
        choices=["radialog", "hf"],
        default="radialog",
        help="radialog: the whole checkpoint; hf: the LLM only, as a plain Hugging Face model directory",
    )
    parser.add_argument(
        "--merge-lora", action="store_true", help="fold the LoRA adapter into the LLM's weights (needed for hf)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if Path(args.destination).resolve() == Path(args.checkpoint).resolve():
        raise InputError("--to must differ from the checkpoint it reads")
    if args.merge_lora and args.format != "hf":
        raise InputError("--merge-lora writes the LLM alone: use it with --format hf")
    # Loaded in float32 on the CPU, so the only rounding is the final cast.
    model = RaDialogModel.from_pretrained(args.checkpoint, device="cpu", dtype=DTYPES["float32"])
    if args.format == "hf":
        if model.config.lora is not None and not args.merge_lora:
            raise InputError("the checkpoint's LLM has a LoRA adapter: --format hf needs --merge-lora")
        save_merged_language_model(model, args.destination, dtype=DTYPES[args.dtype])
    else:
        model.save_pretrained(args.destination, dtype=DTYPES[args.dtype])
    logger.info("wrote %s (%s, %s weights)", args.destination, args.format, args.dtype)
    return 0
