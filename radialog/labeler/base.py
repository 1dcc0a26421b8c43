"""What every labeler returns, and the interface the CLI and the metrics rely on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from radialog.labels import CHEXPERT_LABELS

# CheXpert's label values. "Not mentioned" is None (a blank cell in CheXpert's CSVs).
POSITIVE = 1
NEGATIVE = 0
UNCERTAIN = -1

Labels = dict[str, int | None]


def blank_labels() -> Labels:
    """All 14 observations, none mentioned, in RaDialog's label order."""
    return dict.fromkeys(CHEXPERT_LABELS)


class ReportLabeler(Protocol):
    """Turns report texts into CheXpert labels: one dict per report with all 14 names, values 1/0/-1/None."""

    name: str

    def label(self, reports: Sequence[str], progress: bool = False) -> list[Labels]: ...
