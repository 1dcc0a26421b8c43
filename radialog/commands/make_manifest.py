"""`radialog make-manifest {mimic,iu} ROOT --out MANIFEST.jsonl`: a training manifest from a dataset download."""

from __future__ import annotations

import argparse
import logging
from collections import Counter

from radialog.data import iter_iu_records, iter_mimic_records, read_manifest, write_manifest
from radialog.errors import InputError
from radialog.labeler import RuleBasedLabeler

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("make-manifest", help="build a training manifest (JSONL) from MIMIC-CXR or IU X-ray")
    parser.add_argument("dataset", choices=("mimic", "iu"), help="layout of ROOT")
    parser.add_argument("root", help="dataset folder (MIMIC-CXR-JPG, or the unpacked Open-i IU X-ray)")
    parser.add_argument("--out", required=True, help="MANIFEST.jsonl to write (image paths relative to its folder)")
    parser.add_argument("--reports-root", default=None, help="mimic: folder of the report files/ tree (default: ROOT)")
    parser.add_argument(
        "--chexpert-csv",
        default=None,
        help="mimic: labels CSV (default: ROOT/mimic-cxr-2.0.0-chexpert.csv, else the rule-based labeler)",
    )
    parser.add_argument("--no-labels", action="store_true", help="do not label reports that come without labels")
    parser.add_argument(
        "--reports-only", action="store_true", help="iu: keep reports whose images are not on disk (text-only work)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    labeler = None if args.no_labels else RuleBasedLabeler()
    if args.dataset == "mimic":
        records = iter_mimic_records(args.root, args.reports_root, args.chexpert_csv, labeler)
    else:
        records = iter_iu_records(args.root, labeler, require_images=not args.reports_only)
    count = write_manifest(records, args.out, image_root=args.root)
    if count == 0:
        raise InputError(f"{args.root}: no image with a report found for a {args.dataset} manifest")
    splits = Counter(record.split for record in read_manifest(args.out))
    logger.info(
        "wrote %d records to %s (%s)", count, args.out, ", ".join(f"{k}: {v}" for k, v in sorted(splits.items()))
    )
    return 0
