"""`radialog convert --source DIR --to DIR`: RaDialog v1's released files → our checkpoint layout."""

from __future__ import annotations

import argparse

from radialog.convert import VARIANTS, convert
from radialog.model.presets import PRESETS, get_preset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert RaDialog v1's released weights (see `radialog download`) into a checkpoint"
    )
    parser.add_argument("--source", required=True, help="directory holding the downloaded release files")
    parser.add_argument("--to", required=True, dest="destination", help="checkpoint directory to write")
    parser.add_argument("--variant", choices=VARIANTS, default="report", help="which LoRA adapter (default: report)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="radialog-v1", help=argparse.SUPPRESS)
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="fully unpickle .pth/.ckpt files that hold more than tensors (only for files you trust)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = convert(args.source, args.destination, args.variant, get_preset(args.preset), args.allow_pickle)
    print(report.summary())
    return 0
