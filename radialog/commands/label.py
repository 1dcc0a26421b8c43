"""`radialog label REPORTS`: CheXpert labels (1 / 0 / -1 / blank) for each report in a CSV or JSONL file."""

from __future__ import annotations

import argparse
import logging
import time

from radialog.labeler import BACKENDS, DEFAULT_CHEXBERT_CHECKPOINT, build_labeler
from radialog.labeler.records import FORMATS, file_format, read_records, write_labels

logger = logging.getLogger(__name__)


def add_labeler_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend and the CheXbert options, shared with `radialog evaluate`."""
    parser.add_argument("--backend", choices=BACKENDS, default="rules", help="rule-based labeler (default) or CheXbert")
    parser.add_argument(
        "--chexbert-checkpoint",
        default=None,
        help=f"CheXbert weights (chexbert.pth) for --backend chexbert (default: {DEFAULT_CHEXBERT_CHECKPOINT})",
    )
    parser.add_argument(
        "--chexbert-tokenizer",
        default=None,
        help="vocab.txt (or its directory) of bert-base-uncased (default: the one installed with MiniLM)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for CheXbert (and BERTScore), e.g. cuda")


def labeler_from_args(args: argparse.Namespace):
    return build_labeler(args.backend, args.chexbert_checkpoint, args.chexbert_tokenizer, args.device)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label", help="label reports with the 14 CheXpert observations (rule-based or CheXbert)"
    )
    parser.add_argument("reports", help="CSV or JSONL file with an 'id' and a 'report' per record")
    parser.add_argument("--output", default=None, help="OUT.jsonl or OUT.csv (default: JSONL on stdout)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="output format (default: from --output)")
    add_labeler_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records = read_records(args.reports, ["report"])
    kind = args.format or (file_format(args.output) if args.output else "jsonl")
    labeler = labeler_from_args(args)
    start = time.perf_counter()
    labels = labeler.label([r["report"] for r in records], progress=True)
    logger.info("labelled %d reports with '%s' in %.2f s", len(records), labeler.name, time.perf_counter() - start)
    write_labels([r["id"] for r in records], labels, args.output, kind)
    return 0
