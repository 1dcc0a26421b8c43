"""Correction (CO) samples: a report made wrong on purpose, an instruction that fixes it, the reference.

RaDialog corrected its own generated reports with a teacher LLM. We make the wrong report from the
reference instead, which needs no model and gives an exact answer: drop the sentences that state a
finding (the correction adds it back) and/or insert a sentence, taken from another report, that states
a finding the patient does not have (the correction removes it). The instruction names what the
labeler reads differently in the two reports, so it matches the text exactly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from radialog.instruct_data import templates
from radialog.labeler.base import ReportLabeler
from radialog.labels import CHEXPERT_LABELS

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
NO_FINDING = "No Finding"


def split_report(text: str) -> list[str]:
    """Sentences with their case kept (the labeler's own splitter lowercases)."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def positive(labels: dict[str, int | None]) -> set[str]:
    return {name for name, value in labels.items() if value == 1 and name != NO_FINDING}


def join_findings(names: Iterable[str]) -> str:
    """RaDialog's wording: "a, b and c", lowercased, in label order."""
    ordered = [name.lower() for name in CHEXPERT_LABELS if name in set(names)]
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " and " + ordered[-1]


@dataclass(frozen=True)
class Correction:
    wrong_report: str
    instruction: str
    add: tuple[str, ...]
    remove: tuple[str, ...]


class SentencePool:
    """Sentences (from the data set's own reports) that state exactly one finding, for insertion."""

    def __init__(self, reports: Sequence[str], labeler: ReportLabeler):
        sentences = sorted({s for report in reports for s in split_report(report) if len(s.split()) >= 3})
        self.by_finding: dict[str, list[str]] = {}
        for sentence, labels in zip(sentences, labeler.label(sentences), strict=True):
            found = positive(labels)
            if len(found) == 1 and -1 not in labels.values():
                self.by_finding.setdefault(found.pop(), []).append(sentence)


def make_correction(report: str, pool: SentencePool, labeler: ReportLabeler, rng: random.Random) -> Correction | None:
    """A wrong version of `report` and its correction instruction; None when no change can be made."""
    sentences = split_report(report)
    sentence_labels = labeler.label(sentences)
    reference = positive(labeler.label_report(report))
    removable = sorted(reference)
    insertable = sorted(set(pool.by_finding) - reference)
    modes = [m for m, ok in (("add", removable and len(sentences) > 1), ("remove", insertable)) if ok]
    if not modes:
        return None
    modes = ["add", "remove"] if len(modes) == 2 and rng.random() < 0.25 else [rng.choice(modes)]
    kept = list(zip(sentences, sentence_labels, strict=True))
    if "add" in modes:
        dropped = rng.choice(removable)
        kept = [(s, labels) for s, labels in kept if labels.get(dropped) not in (1, -1)]
    if "remove" in modes:
        wrong = rng.choice(insertable)
        # Sentences denying the inserted finding would contradict it.
        kept = [(s, labels) for s, labels in kept if labels.get(wrong) != 0]
        kept.insert(rng.randint(0, len(kept)), (rng.choice(pool.by_finding[wrong]), {}))
    wrong_report = " ".join(s for s, _ in kept)
    if not wrong_report:
        return None
    found = positive(labeler.label_report(wrong_report))
    add, remove = sorted(reference - found), sorted(found - reference)
    if add and remove:
        template = rng.choice(templates.CO_BOTH)
    elif add:
        template = rng.choice(templates.CO_ADD)
    elif remove:
        template = rng.choice(templates.CO_REMOVE)
    else:
        return None  # the labeler reads no difference: nothing to correct (RaDialog's NOCHANGE)
    instruction = template.replace("<add>", join_findings(add) if add else "").replace(
        "<rem>", join_findings(remove) if remove else ""
    )
    return Correction(wrong_report, instruction, tuple(add), tuple(remove))
