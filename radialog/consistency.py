"""Does the report say what the classifier found? A per-finding check of a report against its findings.

The report is labelled like any other report (the rule-based CheXpert labeler by default, CheXbert when
passed in) and each observation is compared with the classifier's decision:

    classifier positive         report positive or uncertain → agreement
                                report negative              → contradiction
                                report silent                → omission
    classifier clearly negative report positive              → contradiction  (p < `negative_threshold`)
                                otherwise                    → agreement
    classifier in between       anything                     → agreement      (too unsure to flag either way)

A hedged mention ("possible small effusion") is a mention, so it neither omits nor contradicts. "No
Finding" is left out: the labeler derives it from the other 13, whose checks already say what differs.
Observations without a classifier output (NaN, or no classifier at all) are left out too: there is nothing
to compare them with. Each check names the report sentence that carries the report's value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum

from radialog.labeler import NEGATIVE, POSITIVE, UNCERTAIN, ReportLabeler, RuleBasedLabeler
from radialog.labeler.rules import NO_FINDING, label_sentence
from radialog.labeler.text import split_sentences
from radialog.labels import CHEXPERT_LABELS

_REPORT_VALUE = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain", None: "not mentioned"}


class Verdict(StrEnum):
    AGREEMENT = "agreement"
    CONTRADICTION = "contradiction"
    OMISSION = "omission"


@dataclass(frozen=True)
class ConsistencyConfig:
    # Below this probability the classifier calls a finding clearly absent, so a report stating it is a
    # contradiction; between it and the classifier's own threshold neither side is flagged.
    negative_threshold: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_threshold <= 1.0:
            raise ValueError(f"negative_threshold must lie in [0, 1], not {self.negative_threshold}")


@dataclass(frozen=True)
class FindingCheck:
    finding: str
    verdict: Verdict
    report: str  # what the report says: "positive", "negative", "uncertain" or "not mentioned"
    classifier_positive: bool
    probability: float | None  # None when the classifier gave only a decision
    sentence: str | None  # the report sentence that says it (None when the report is silent)


@dataclass(frozen=True)
class ConsistencyResult:
    checks: tuple[FindingCheck, ...]  # CheXpert order

    @property
    def contradictions(self) -> list[FindingCheck]:
        return [c for c in self.checks if c.verdict is Verdict.CONTRADICTION]

    @property
    def omissions(self) -> list[FindingCheck]:
        return [c for c in self.checks if c.verdict is Verdict.OMISSION]

    @property
    def consistent(self) -> bool:
        return all(c.verdict is Verdict.AGREEMENT for c in self.checks)

    def by_finding(self) -> dict[str, FindingCheck]:
        return {c.finding: c for c in self.checks}

    def to_dict(self) -> dict:
        """JSON-ready: `consistent`, counts per verdict and the checks (verdicts as plain strings)."""
        checks = [{**asdict(c), "verdict": str(c.verdict)} for c in self.checks]
        counts = {str(v): sum(c.verdict is v for c in self.checks) for v in Verdict}
        return {"consistent": self.consistent, "counts": counts, "checks": checks}


def check_consistency(
    report: str,
    positive: Collection[str],
    probabilities: Mapping[str, float] | None = None,
    *,
    labeler: ReportLabeler | None = None,
    config: ConsistencyConfig | None = None,
) -> ConsistencyResult:
    """Compare `report` with the classifier, finding by finding.

    `positive` holds the findings the classifier calls present (its own threshold decided them, as for the
    prompt and the findings table). `probabilities`, when given, decides which of the others are clearly
    absent and which observations the classifier covers at all; without it every other finding counts as
    clearly absent.
    """
    config = config or ConsistencyConfig()
    labels = (labeler or RuleBasedLabeler()).label([report])[0]
    sentences = _sentences(report)
    checks = []
    for finding in CHEXPERT_LABELS:
        if finding == NO_FINDING:
            continue
        probability = None if probabilities is None else probabilities.get(finding, math.nan)
        if probability is not None and math.isnan(probability):
            continue  # no classifier output for it
        is_positive = finding in positive
        clearly_negative = not is_positive and (probability is None or probability < config.negative_threshold)
        value = labels[finding]
        checks.append(
            FindingCheck(
                finding=finding,
                verdict=_verdict(value, is_positive, clearly_negative),
                report=_REPORT_VALUE[value],
                classifier_positive=is_positive,
                probability=None if probability is None else round(probability, 4),
                sentence=_sentence_saying(sentences, finding, value),
            )
        )
    return ConsistencyResult(tuple(checks))


def _verdict(value: int | None, positive: bool, clearly_negative: bool) -> Verdict:
    if positive:
        if value is None:
            return Verdict.OMISSION
        return Verdict.CONTRADICTION if value == NEGATIVE else Verdict.AGREEMENT
    if clearly_negative and value == POSITIVE:
        return Verdict.CONTRADICTION
    return Verdict.AGREEMENT


@dataclass(frozen=True)
class _Sentence:
    shown: str  # as the report wrote it where it can be found there, else as the labeler read it
    found: tuple[tuple[str, int], ...]  # (observation, value) of each mention


def _sentences(report: str) -> list[_Sentence]:
    return [_Sentence(_original(report, s), label_sentence(s)[0]) for s in split_sentences(report)]


def _sentence_saying(sentences: list[_Sentence], finding: str, value: int | None) -> str | None:
    """The first sentence that gives `finding` the report's value (CheXbert's value may have none)."""
    if value is None:
        return None
    return next((s.shown for s in sentences if (finding, value) in s.found), None)


def _original(report: str, normalised: str) -> str:
    """The labeler reads lowercased, respaced sentences; show the report's own words where they match."""
    words = re.findall(r"\w+", normalised)
    if not words:
        return normalised
    match = re.search(r"\W+".join(map(re.escape, words)), report, re.IGNORECASE)
    return match.group() if match else normalised
