"""`radialog make-synthetic --out DIR --count N`: synthetic chest films with known findings and reports."""

from __future__ import annotations

import argparse
import logging
import time

from radialog.errors import InputError
from radialog.synthetic import SyntheticConfig, make_synthetic_dataset

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-synthetic", help="write synthetic chest X-rays (PNG) with reports and a manifest, for tests and demos"
    )
    parser.add_argument("--out", required=True, help="output folder: images/ and manifest.jsonl")
    parser.add_argument("--count", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument(
        "--sentences-per-finding", type=int, default=None, help="keep the N most frequent phrasings per finding"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise InputError("--count must be at least 1")
    try:
        config = SyntheticConfig(image_size=args.image_size, sentences_per_finding=args.sentences_per_finding)
    except ValueError as err:
        raise InputError(str(err)) from err
    start = time.perf_counter()
    manifest = make_synthetic_dataset(args.out, args.count, args.seed, config)
    seconds = time.perf_counter() - start
    logger.info("wrote %d images and %s in %.1f s (%.0f images/s)", args.count, manifest, seconds, args.count / seconds)
    return 0
