"""`radialog evaluate PRED.jsonl`: CE, BLEU/METEOR/ROUGE-L/CIDEr, BERTScore and consistency of generated reports."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from radialog.commands.label import add_labeler_arguments, labeler_from_args
from radialog.errors import InputError
from radialog.labeler.records import read_records

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = Path("outputs/evaluation")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from radialog.metrics.clinical import UNCERTAIN_POLICIES

    parser = subparsers.add_parser("evaluate", help="score generated reports against reference reports")
    parser.add_argument(
        "predictions", help="JSONL (or CSV) with 'id', 'prediction' and, without --references, 'reference'"
    )
    parser.add_argument("--references", default=None, help="JSONL (or CSV) with 'id' and 'reference', matched by id")
    parser.add_argument(
        "--output-dir", default=str(DEFAULT_OUTPUT_DIR), help=f"where metrics.json goes (default: {DEFAULT_OUTPUT_DIR})"
    )
    parser.add_argument("--plot", action="store_true", help="also save a per-label F1 bar chart (per_label_f1.png)")
    parser.add_argument(
        "--uncertain-policy",
        choices=sorted(UNCERTAIN_POLICIES),
        default="radialog",
        help="radialog: uncertain and blank count as absent (default); rrg: uncertain counts as present",
    )
    parser.add_argument(
        "--zero-division", type=float, choices=(0.0, 1.0), default=0.0, help="F1 of a label absent on both sides"
    )
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java)")
    parser.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    parser.add_argument(
        "--bertscore-model", default=None, help="local model directory for BERTScore (default: installed MiniLM)"
    )
    parser.add_argument("--bertscore-layers", type=int, default=None, help="layer for BERTScore (default: last)")
    add_labeler_arguments(parser)
    parser.set_defaults(func=run)


def load_pairs(predictions_path: str, references_path: str | None) -> tuple[list, list[str], list[str]]:
    """(ids, predictions, references), paired by id; every id must be on both sides, no reference empty."""
    ids, predictions, references = _pair(predictions_path, references_path)
    empty = [str(i) for i, reference in zip(ids, references, strict=True) if not reference.strip()]
    if empty:
        raise InputError(
            f"{len(empty)} reference(s) are empty (e.g. id {', '.join(empty[:3])}): nothing to score against"
        )
    return ids, predictions, references


def _pair(predictions_path: str, references_path: str | None) -> tuple[list, list[str], list[str]]:
    if references_path is None:
        records = read_records(predictions_path, ["prediction", "reference"])
        return [r["id"] for r in records], [r["prediction"] for r in records], [r["reference"] for r in records]
    predicted = read_records(predictions_path, ["prediction"])
    references = {str(r["id"]): r["reference"] for r in read_records(references_path, ["reference"])}
    missing = [str(r["id"]) for r in predicted if str(r["id"]) not in references]
    extra = sorted(set(references) - {str(r["id"]) for r in predicted})
    if missing or extra:
        details = []
        if missing:
            details.append(f"{len(missing)} prediction id(s) have no reference (e.g. {', '.join(missing[:3])})")
        if extra:
            details.append(f"{len(extra)} reference id(s) have no prediction (e.g. {', '.join(extra[:3])})")
        raise InputError(f"ids of {predictions_path} and {references_path} do not match: " + "; ".join(details))
    return (
        [r["id"] for r in predicted],
        [r["prediction"] for r in predicted],
        [references[str(r["id"])] for r in predicted],
    )


def run(args: argparse.Namespace) -> int:
    from radialog.metrics import (
        BertScoreConfig,
        EvaluationConfig,
        evaluate_reports,
        format_table,
        plot_per_label_f1,
    )

    ids, predictions, references = load_pairs(args.predictions, args.references)
    bertscore = None
    if not args.no_bertscore:
        bertscore = BertScoreConfig(args.bertscore_model, args.bertscore_layers, device=args.device)
    config = EvaluationConfig(args.uncertain_policy, args.zero_division, not args.no_meteor, bertscore)
    evaluation = evaluate_reports(predictions, references, labeler_from_args(args), config, progress=True)

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n")
    with (output_dir / "labels.jsonl").open("w", encoding="utf-8") as handle:
        for record_id, predicted, reference in zip(
            ids, evaluation.predicted_labels, evaluation.reference_labels, strict=True
        ):
            handle.write(json.dumps({"id": record_id, "prediction": predicted, "reference": reference}) + "\n")
    print(format_table(evaluation))
    written = [output_dir / "metrics.json", output_dir / "labels.jsonl"]
    if args.plot:
        written.append(plot_per_label_f1(evaluation, output_dir / "per_label_f1.png"))
    print("\nWrote " + ", ".join(str(p) for p in written))
    return 0
