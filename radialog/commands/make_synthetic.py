"""`radialog make-synthetic --out DIR --count N`: synthetic chest films with known findings and reports."""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path

from radialog.errors import InputError
from radialog.synthetic import SyntheticConfig, SyntheticSample, make_synthetic_dataset, sentence_bank

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
    parser.add_argument(
        "--instruct-per-study",
        type=int,
        default=0,
        help="also write instruct.jsonl: N samples of RaDialog's tasks per training study, answers by construction",
    )
    parser.add_argument(
        "--task-weights",
        default=None,
        help="the instruct task mix, e.g. CO=0.3,RQA=0.2,EL=0.2 (tasks left out are not drawn; default: the "
        "standard mix)",
    )
    parser.add_argument(
        "--instruct-name",
        default="instruct.jsonl",
        help="file name of the instruct data in --out (default: %(default)s)",
    )
    parser.add_argument("--instruct-seed", type=int, default=None, help="seed of the instruct draw (default: --seed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise InputError("--count must be at least 1")
    try:
        config = SyntheticConfig(image_size=args.image_size, sentences_per_finding=args.sentences_per_finding)
    except ValueError as err:
        raise InputError(str(err)) from err
    if args.instruct_per_study < 0:
        raise InputError("--instruct-per-study must be 0 or more")
    task_weights = parse_task_weights(args.task_weights) if args.task_weights else None
    if Path(args.instruct_name).name != args.instruct_name or not args.instruct_name.endswith(".jsonl"):
        raise InputError(f"--instruct-name must be a file name ending in .jsonl, not {args.instruct_name!r}")
    # Imported here: the instruct writer pulls in the chat module, which `radialog --help` does not need.
    from radialog.instruct_data import InstructResult, write_instruct_data
    from radialog.instruct_data.synthetic_tasks import SyntheticStudy, SyntheticTaskWriter, check_task_weights

    if task_weights is not None:
        try:
            check_task_weights(task_weights)
        except ValueError as err:
            raise InputError(f"--task-weights: {err}") from err

    studies: list[SyntheticStudy] = []

    def keep_training_study(sample: SyntheticSample, image: str) -> None:
        if args.instruct_per_study and sample.split == "train":
            studies.append(SyntheticStudy.of(sample, image))

    start = time.perf_counter()
    manifest = make_synthetic_dataset(args.out, args.count, args.seed, config, on_sample=keep_training_study)
    seconds = time.perf_counter() - start
    logger.info("wrote %d images and %s in %.1f s (%.0f images/s)", args.count, manifest, seconds, args.count / seconds)
    if studies:
        writer = SyntheticTaskWriter(sentence_bank(config))
        seed = args.seed if args.instruct_seed is None else args.instruct_seed
        samples = writer.samples(studies, args.instruct_per_study, seed=seed, task_weights=task_weights)
        out = manifest.parent / args.instruct_name
        stats = write_instruct_data(InstructResult(samples, {"tasks": dict(Counter(s["task"] for s in samples))}), out)
        logger.info("wrote %d instruct samples to %s (%s)", len(samples), out, stats)
    return 0


def parse_task_weights(text: str) -> dict[str, float]:
    """ "CO=0.3,RQA=0.2" → {"CO": 0.3, "RQA": 0.2}."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        task, sep, value = item.partition("=")
        try:
            weights[task.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not task.strip():
            raise InputError(f"--task-weights: {item!r} is not TASK=WEIGHT")
    return weights
