"""Scoring a trained model on held-out manifest records: generated reports → CE and NLG metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from radialog.imaging import load_xray
from radialog.labeler import RuleBasedLabeler, blank_labels
from radialog.metrics import clinical_efficacy
from radialog.model.modeling import RaDialogModel
from radialog.training.datasets import blank_xray

logger = logging.getLogger(__name__)


def generate_reports(model: RaDialogModel, records: Sequence[Any], image_root: Path, blind: bool = False) -> list[str]:
    reports = []
    for record in tqdm(records, desc="generating reports"):
        xray = blank_xray() if blind else load_xray(image_root / record.image)
        reports.append(model.generate_report(xray).report)
    return reports


def evaluate_model(
    model: RaDialogModel, records: Sequence[Any], image_root: Path, blind: bool = False
) -> dict[str, Any]:
    """CE scores of generated reports against the records' labels (or the labeled reference report).

    Labels come from the rule-based labeler on both sides when a record has none; the uncertain and
    blank policy is RaDialog's (both count as negative).
    """
    predictions = generate_reports(model, records, image_root, blind)
    labeler = RuleBasedLabeler()
    predicted = labeler.label(predictions)
    references = [blank_labels() | (r.labels or {}) for r in records]
    unlabeled = [i for i, r in enumerate(records) if not r.labels]
    for i, labels in zip(unlabeled, labeler.label([records[i].findings for i in unlabeled]), strict=True):
        references[i] = labels
    scores = clinical_efficacy(predicted, references)
    present = {name: s.f1 for name, s in scores.per_label.items() if s.support > 0}
    return {
        "num_samples": len(records),
        # Macro F1 over the findings that occur in the references: the headline number of small test sets.
        "ce_macro_f1_present": sum(present.values()) / len(present) if present else 0.0,
        "ce": scores.to_dict(),
        "examples": predictions[:5],
    }
