"""`radialog download --to DIR`: fetch RaDialog v1's official weights (needs internet)."""

from __future__ import annotations

import argparse

from radialog.download import download


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download Vicuna-7b v1.3, BioViL-T and RaDialog v1's released weights (about 16 GB)",
    )
    parser.add_argument("--to", required=True, dest="target", help="directory to fill, e.g. checkpoints/radialog-v1")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = download(args.target)
    print(f"done: {manifest}\nnext: radialog convert --source {args.target} --to {args.target}")
    return 0
