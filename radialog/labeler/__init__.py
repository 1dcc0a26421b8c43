"""CheXpert labelers: report text → 14 observation labels (1 positive, 0 negative, -1 uncertain, None).

Two backends with one output format: `RuleBasedLabeler` (offline, fast, no weights) and
`CheXbertLabeler` (the CheXbert model, from a local `chexbert.pth`).
"""

from __future__ import annotations

from pathlib import Path

from radialog.labeler.base import NEGATIVE, POSITIVE, UNCERTAIN, Labels, ReportLabeler, blank_labels
from radialog.labeler.iu_reports import IUReport, iter_iu_reports
from radialog.labeler.rules import RuleBasedLabeler

BACKENDS = ("rules", "chexbert")
DEFAULT_CHEXBERT_CHECKPOINT = Path("checkpoints/chexbert.pth")


def build_labeler(
    backend: str = "rules",
    chexbert_checkpoint: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    device: str = "cpu",
) -> ReportLabeler:
    """The labeler a command line asked for; CheXbert (and torch) only load when chosen."""
    if backend == "rules":
        return RuleBasedLabeler()
    if backend == "chexbert":
        from radialog.labeler.chexbert import CheXbertLabeler

        checkpoint = chexbert_checkpoint if chexbert_checkpoint is not None else DEFAULT_CHEXBERT_CHECKPOINT
        return CheXbertLabeler.from_checkpoint(checkpoint, tokenizer_path=tokenizer_path, device=device)
    raise ValueError(f"unknown labeler backend {backend!r}: choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "IUReport",
    "Labels",
    "ReportLabeler",
    "RuleBasedLabeler",
    "blank_labels",
    "build_labeler",
    "iter_iu_reports",
]
