"""`radialog convert --source DIR --to DIR`: RaDialog v1's released files (or, with `--format r2gengpt
--checkpoint FILE`, an R2GenGPT checkpoint) → our checkpoint layout."""

from __future__ import annotations

import argparse

from radialog.convert import PROJECTOR_SEED, VARIANTS, convert
from radialog.errors import InputError
from radialog.model.presets import PRESETS, get_preset

FORMATS = ("radialog", "r2gengpt")
DEFAULT_PRESETS = {"radialog": "radialog-v1", "r2gengpt": "r2gengpt"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert RaDialog v1's released weights (see `radialog download`) or R2GenGPT's to a checkpoint"
    )
    parser.add_argument(
        "--source",
        required=True,
        help="directory holding the downloaded release files (r2gengpt: llama-2-7b-chat/ and the Swin's folder)",
    )
    parser.add_argument("--to", required=True, dest="destination", help="checkpoint directory to write")
    parser.add_argument("--format", choices=FORMATS, default="radialog", help="whose release (default: radialog)")
    parser.add_argument("--variant", choices=VARIANTS, default="report", help="which LoRA adapter (default: report)")
    parser.add_argument(
        "--projector-seed",
        type=int,
        default=PROJECTOR_SEED,
        help="seed that rebuilds RaDialog's frozen projector (default: 42, the seed its LLM stage's image "
        "embeddings were computed with; `radialog check-release` tells which seed aligns)",
    )
    parser.add_argument("--checkpoint", help="r2gengpt: the .pth file its training saved (any of the three modes)")
    parser.add_argument(
        "--lora-alpha", type=float, default=None, help="r2gengpt delta: LoRA alpha (default: its vis_alpha)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="fully unpickle .pth/.ckpt files that hold more than tensors (only for files you trust)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = get_preset(args.preset or DEFAULT_PRESETS[args.format])
    if args.format == "r2gengpt":
        from radialog.convert_r2gengpt import convert_r2gengpt

        if args.checkpoint is None:
            raise InputError("--format r2gengpt needs --checkpoint FILE.pth")
        report = convert_r2gengpt(
            args.checkpoint, args.source, args.destination, config, args.lora_alpha, args.allow_pickle
        )
    else:
        report = convert(args.source, args.destination, args.variant, config, args.allow_pickle, args.projector_seed)
    print(report.summary())
    return 0
