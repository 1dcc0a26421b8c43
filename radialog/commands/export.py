"""`radialog export CHECKPOINT --to DIR [--dtype float16]`: re-save a checkpoint, e.g. halved for shipping."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from radialog.errors import InputError
from radialog.model.loading import DTYPES
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="re-save a checkpoint with its weights cast (float16 halves what you ship)"
    )
    parser.add_argument("checkpoint", help="checkpoint directory to read")
    parser.add_argument("--to", required=True, dest="destination", help="checkpoint directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="stored weights (default: float16)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if Path(args.destination).resolve() == Path(args.checkpoint).resolve():
        raise InputError("--to must differ from the checkpoint it reads")
    # Loaded in float32 on the CPU, so the only rounding is the final cast.
    model = RaDialogModel.from_pretrained(args.checkpoint, device="cpu", dtype=DTYPES["float32"])
    model.save_pretrained(args.destination, dtype=DTYPES[args.dtype])
    logger.info("wrote %s (%s weights)", args.destination, args.dtype)
    return 0
