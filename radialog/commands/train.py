"""`radialog train CONFIG.yaml`: run the training stages (works under `accelerate launch` too)."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train RaDialog (classifier, alignment, language stages)")
    parser.add_argument("config", help="training configuration (YAML); see radialog/training/config.py")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radialog.training.config import TrainConfig
    from radialog.training.pipeline import train

    config = TrainConfig.from_yaml(args.config)
    if args.output_dir:
        config.output_dir = args.output_dir
    result = train(config)
    logger.info("trained model: %s", result.output_dir / "final")
    if result.metrics is not None:
        print(json.dumps(result.metrics, indent=2))
    return 0
