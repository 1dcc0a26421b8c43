"""`radialog check-release DIR`: image → report retrieval with the release's stage-1 heads, per projector seed,
to tell a converted release that sees images from one whose rebuilt projector is wrong."""

from __future__ import annotations

import argparse

from radialog.errors import InputError
from radialog.release import PROJECTOR_SEEDS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-release", help="check that a converted release aligns images with their reports (per projector seed)"
    )
    parser.add_argument("checkpoint", help="checkpoint directory written by `radialog convert`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--iu-images",
        help="folder of IU X-ray PNGs named by image id (CXR7_IM-2263-1001.png); reports from torchxrayvision",
    )
    source.add_argument("--manifest", help="a manifest JSONL: each image with its own findings")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(PROJECTOR_SEEDS), help="projector seeds to try")
    parser.add_argument("--distractors", type=int, default=95, help="other IU reports each image is ranked among")
    parser.add_argument("--keep-stored", action="store_true", help="also score the projector stored in the checkpoint")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radialog.check_release import check_release, iu_retrieval_set, manifest_retrieval_set

    if args.distractors < 1:
        raise InputError("--distractors must be at least 1")
    retrieval = (
        iu_retrieval_set(args.iu_images, args.distractors) if args.iu_images else manifest_retrieval_set(args.manifest)
    )
    print(check_release(args.checkpoint, retrieval, args.seeds, keep_stored=args.keep_stored).summary())
    return 0
