"""Clinical efficacy (CE): do the CheXpert findings of generated reports match those of the references?

Both sides are labelled by the same labeler, each label is turned into present/absent by an
uncertain policy, and precision/recall/F1 are computed with scikit-learn over reports × labels:
macro (mean over labels) and micro (pooled counts), over all 14 labels and over the 5-label subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from radialog.labeler.base import POSITIVE, UNCERTAIN, Labels
from radialog.labels import CHEXPERT_5_LABELS, CHEXPERT_LABELS

# Which label values count as "present". RaDialog's test.py maps blank and uncertain to 0 on both
# sides; the convention of many report-generation papers ("rrg") counts uncertain as present.
UNCERTAIN_POLICIES: dict[str, frozenset[int]] = {
    "radialog": frozenset({POSITIVE}),
    "rrg": frozenset({POSITIVE, UNCERTAIN}),
}


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class LabelScores(Scores):
    support: int  # reports whose reference has the finding
    predicted: int  # reports whose prediction has it


@dataclass(frozen=True)
class ClinicalEfficacy:
    policy: str
    macro_14: Scores
    micro_14: Scores
    macro_5: Scores
    micro_5: Scores
    per_label: dict[str, LabelScores]

    def to_dict(self) -> dict:
        return asdict(self)


def binarize(labels: Sequence[Labels], policy: str = "radialog") -> np.ndarray:
    """(reports, 14) matrix of 0/1 in CHEXPERT_LABELS order."""
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"unknown uncertain policy {policy!r}: choose one of {', '.join(UNCERTAIN_POLICIES)}")
    present = UNCERTAIN_POLICIES[policy]
    return np.array([[int(report[name] in present) for name in CHEXPERT_LABELS] for report in labels], dtype=np.int64)


def _prf(y_true: np.ndarray, y_pred: np.ndarray, average: str | None, zero_division: float):
    from sklearn.metrics import precision_recall_fscore_support  # slow import: only when scoring

    return precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=zero_division)[:3]


def _scores(y_true: np.ndarray, y_pred: np.ndarray, average: str, zero_division: float) -> Scores:
    precision, recall, f1 = _prf(y_true, y_pred, average, zero_division)
    return Scores(float(precision), float(recall), float(f1))


def clinical_efficacy(
    predicted: Sequence[Labels],
    reference: Sequence[Labels],
    policy: str = "radialog",
    zero_division: float = 0.0,
) -> ClinicalEfficacy:
    """CE scores of predicted vs reference labels (one dict per report, same order).

    `zero_division` is the score of a label with nothing to count (no positive on either side for
    F1); scikit-learn's default, which RaDialog's numbers use, is 0.
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted label sets but {len(reference)} reference ones")
    if not predicted:
        raise ValueError("no reports to score")
    y_pred, y_true = binarize(predicted, policy), binarize(reference, policy)
    subset = [CHEXPERT_LABELS.index(name) for name in CHEXPERT_5_LABELS]

    precision, recall, f1 = _prf(y_true, y_pred, None, zero_division)
    per_label = {
        name: LabelScores(
            float(precision[i]), float(recall[i]), float(f1[i]), int(y_true[:, i].sum()), int(y_pred[:, i].sum())
        )
        for i, name in enumerate(CHEXPERT_LABELS)
    }
    return ClinicalEfficacy(
        policy=policy,
        macro_14=_scores(y_true, y_pred, "macro", zero_division),
        micro_14=_scores(y_true, y_pred, "micro", zero_division),
        macro_5=_scores(y_true[:, subset], y_pred[:, subset], "macro", zero_division),
        micro_5=_scores(y_true[:, subset], y_pred[:, subset], "micro", zero_division),
        per_label=per_label,
    )
