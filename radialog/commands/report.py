"""`radialog report IMAGE`: predicted findings and a generated findings section for one image."""

from __future__ import annotations

import argparse
import json
import math

from radialog.imaging import load_xray
from radialog.model.loading import add_model_arguments, load_model_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write a draft findings report for a chest X-ray")
    parser.add_argument("image", help="PNG, JPEG or DICOM file")
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="report length budget in tokens")
    parser.add_argument("--json", action="store_true", help='print {"findings": {...}, "report": "..."}')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    xray = load_xray(args.image)  # first, so bad input fails before the model loads
    model = load_model_from_args(args)
    result = model.generate_report(xray, max_new_tokens=args.max_new_tokens)
    # NaN (a label the classifier cannot predict) is not valid JSON: it becomes null.
    probabilities = {label: None if math.isnan(p) else round(p, 4) for label, p in result.probabilities.items()}
    if args.json:
        print(json.dumps({"findings": probabilities, "report": result.report}))
        return 0
    print("Predicted findings (probability):")
    for label, p in sorted(probabilities.items(), key=lambda item: -1.0 if item[1] is None else item[1], reverse=True):
        mark = "*" if p is not None and p > model.config.classifier.threshold else " "
        print(f"  {mark} {label:<28} {'n/a' if p is None else f'{p:.3f}'}")
    print("\nReport:\n" + result.report)
    return 0
