"""`radialog make-instruct MANIFEST --out OUT.jsonl`: RaDialog's instruct conversations from a manifest."""

from __future__ import annotations

import argparse
import json
import logging

from radialog.data import read_manifest
from radialog.labeler import RuleBasedLabeler

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-instruct", help="build RaDialog's instruct data (RG, CO, CPbQA, CPaQA, RQA, EL, SU) from a manifest"
    )
    parser.add_argument("manifest", help="MANIFEST.jsonl (see `radialog make-manifest`)")
    parser.add_argument("--out", required=True, help="OUT.jsonl; counts per task go to OUT.stats.json")
    parser.add_argument(
        "--teacher-model",
        default=None,
        help="local causal LM folder that answers RQA/EL/SU (without it: EL/SU from templates, no RQA)",
    )
    parser.add_argument("--teacher-device", default="cpu", help="torch device for the teacher, e.g. cuda")
    parser.add_argument("--teacher-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None, help="keep at most N samples (drawn at random)")
    parser.add_argument("--split", default="train", help="manifest split to use (default: train)")
    parser.add_argument("--predictions", default=None, help="JSONL of {id, labels}: predicted findings for the prompts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the instruct builder (and transformers for the teacher) only when asked for.
    from radialog.instruct_data.builder import (
        InstructConfig,
        build_instruct_data,
        read_predictions,
        write_instruct_data,
    )
    from radialog.instruct_data.teacher import TeacherConfig

    teacher = None
    if args.teacher_model is not None:
        teacher = TeacherConfig(args.teacher_model, batch_size=args.teacher_batch_size, device=args.teacher_device)
    config = InstructConfig(seed=args.seed, size=args.size, split=args.split, teacher=teacher)
    predictions = read_predictions(args.predictions) if args.predictions else None
    result = build_instruct_data(read_manifest(args.manifest), RuleBasedLabeler(), config, predictions)
    stats_path = write_instruct_data(result, args.out)
    logger.info("wrote %d samples to %s, stats to %s", len(result.samples), args.out, stats_path)
    print(json.dumps(result.stats, indent=2))
    return 0
