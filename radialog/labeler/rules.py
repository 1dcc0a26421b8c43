"""Rule-based CheXpert labeler: mention phrases plus negation/uncertainty cues, no model, no downloads.

The approach is the CheXpert labeler's (Irvin et al., AAAI 2019): find mentions of each observation
in each sentence, classify every mention as negative, uncertain or positive from the cues around it,
then aggregate per report (positive beats uncertain beats negative) and set "No Finding" when no
other finding (Support Devices aside, abnormalities outside the 14 included) is positive or
uncertain. CheXpert reads the cues off a dependency parse; we use phrase cues with a reach in words
(see `cues.py`), which keeps the labeler fast (thousands of reports per second on one core).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from tqdm import tqdm

from radialog.labeler import cues, phrases
from radialog.labeler.base import NEGATIVE, POSITIVE, UNCERTAIN, Labels, blank_labels
from radialog.labeler.text import split_sentences
from radialog.labels import CHEXPERT_LABELS

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"


class Mention(Enum):
    FINDING = "finding"
    ANATOMY = "anatomy"
    HEDGED = "hedged"


def _words(pattern_list: Iterable[str]) -> re.Pattern[str]:
    """Alternation of phrases, matched from a word start."""
    return re.compile(r"\b(?:" + "|".join(pattern_list) + ")")


_Found = tuple[int, int, cues.Phrase]  # a cue's start, end and phrase in a sentence


class _CueSet:
    """One regex for a list of cue phrases; `find` returns (start, end, phrase) in text order."""

    def __init__(self, phrase_list: Sequence[cues.Phrase]):
        self.phrases = tuple(phrase_list)
        alternatives = "|".join(f"(?P<c{i}>{p.pattern})" for i, p in enumerate(self.phrases))
        # Hyphens count as word characters: "non-enlarged" holds no "enlarged" cue.
        self.regex = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")

    def find(self, text: str) -> list[_Found]:
        return [(m.start(), m.end(), self.phrases[int(m.lastgroup[1:])]) for m in self.regex.finditer(text)]


@dataclass(frozen=True)
class _Observation:
    name: str
    mentions: tuple[tuple[Mention, re.Pattern[str]], ...]
    exclusions: re.Pattern[str] | None


def _build_observations() -> tuple[_Observation, ...]:
    observations = []
    for name in CHEXPERT_LABELS:
        mentions = tuple(
            (kind, _words(table[name]))
            for kind, table in (
                (Mention.FINDING, phrases.FINDINGS),
                (Mention.ANATOMY, phrases.ANATOMY),
                (Mention.HEDGED, phrases.HEDGED),
            )
            if name in table
        )
        if mentions:
            exclusions = _words(phrases.EXCLUSIONS[name]) if name in phrases.EXCLUSIONS else None
            observations.append(_Observation(name, mentions, exclusions))
    return tuple(observations)


_OBSERVATIONS = _build_observations()
_OTHER_FINDINGS = _words(phrases.OTHER_FINDINGS)
_NOT_ASSESSED = _words(phrases.NOT_ASSESSED)
_HEART_FAILURE = re.compile(phrases.HEART_FAILURE)
_BEFORE = _CueSet(cues.BEFORE)
_AFTER = _CueSet(cues.AFTER)
_QUALIFIERS_BEFORE = _CueSet(cues.QUALIFIERS_BEFORE)
_QUALIFIERS_AFTER = _CueSet(cues.QUALIFIERS_AFTER)
_BREAKS_BEFORE = re.compile(rf"(?<![\w-])(?:{cues.BREAKS_BEFORE})(?![\w-])")
_BREAKS_AFTER = re.compile(rf",|(?<![\w-])(?:{cues.BREAKS_AFTER})(?![\w-])")

_CUE_VALUE = {
    cues.Cue.UNCERTAIN_FIRST: UNCERTAIN,
    cues.Cue.NEGATION: NEGATIVE,
    cues.Cue.UNCERTAIN: UNCERTAIN,
    cues.Cue.OR: UNCERTAIN,
    cues.Cue.PSEUDO: POSITIVE,
}
_QUALIFIER_VALUE = {
    cues.Qualifier.NORMAL: NEGATIVE,
    cues.Qualifier.STABLE: UNCERTAIN,
    cues.Qualifier.ABNORMAL: POSITIVE,
}


def _n_words(text: str) -> int:
    return len(text.split())


class _Sentence:
    """One sentence with its cues and clause breaks, found once and shared by all its mentions."""

    def __init__(self, text: str):
        self.text = text
        self.before = _BEFORE.find(text)
        self.after = _AFTER.find(text)
        self.breaks_before = [m.end() for m in _BREAKS_BEFORE.finditer(text)]
        # Commas end a clause after a mention; anatomy qualifiers may reach past them
        # ("heart size, mediastinal contours and hila are normal").
        self.breaks_after = [(m.start(), m.group() == ",") for m in _BREAKS_AFTER.finditer(text)]
        self._qualifiers: tuple[list[_Found], list[_Found]] | None = None

    @property
    def qualifiers(self) -> tuple[list[_Found], list[_Found]]:
        if self._qualifiers is None:
            self._qualifiers = (_QUALIFIERS_BEFORE.find(self.text), _QUALIFIERS_AFTER.find(self.text))
        return self._qualifiers

    def _scope(self, start: int, end: int, commas: bool) -> tuple[int, int]:
        left = max((b for b in self.breaks_before if b <= start), default=0)
        right = min(
            (b for b, is_comma in self.breaks_after if b >= end and (commas or not is_comma)), default=len(self.text)
        )
        return left, right

    def _cues_before(
        self, found: list[_Found], start: int, left: int
    ) -> Iterator[tuple[cues.Cue | cues.Qualifier, int]]:
        """(kind, distance) of each cue in reach before the mention, nearest first; a pseudo cue ends the scope.

        A cue may run into the mention ("no consolidation to suggest pneumonia" is one cue that also
        negates "consolidation"; "normal size of the heart"): it then counts at distance 0."""
        for cue_start, cue_end, phrase in reversed(found):
            if cue_start >= start or cue_start < left:
                continue
            distance = _n_words(self.text[cue_end:start]) if cue_end <= start else 0
            if distance <= phrase.reach:
                yield phrase.kind, distance
                if phrase.kind is cues.Cue.PSEUDO:
                    return

    def _cues_after(self, found: list[_Found], end: int, right: int) -> Iterator[tuple[cues.Cue | cues.Qualifier, int]]:
        for cue_start, cue_end, phrase in found:
            if cue_start < end or cue_end > right:
                continue
            distance = _n_words(self.text[end:cue_start])
            if distance <= phrase.reach:
                yield phrase.kind, distance
                if phrase.kind is cues.Cue.PSEUDO:
                    return

    def classify(self, start: int, end: int, kind: Mention) -> int | None:
        """The mention's value (1/0/-1), or None for an anatomy mention that states nothing."""
        left, right = self._scope(start, end, commas=True)
        found = {k for k, _ in self._cues_before(self.before, start, left)}
        found |= {k for k, _ in self._cues_after(self.after, end, right)}
        if kind is Mention.ANATOMY:
            # "No change in heart size" is about stability, not a finding; leave that to the qualifiers.
            found -= {cues.Cue.PSEUDO, cues.Cue.OR}
            if found:
                return _CUE_VALUE[max(found)]
            return self._qualify(start, end, left)
        strongest = max(found, default=None)
        if kind is Mention.HEDGED:
            return NEGATIVE if strongest is cues.Cue.NEGATION else UNCERTAIN
        return POSITIVE if strongest is None else _CUE_VALUE[strongest]

    def _qualify(self, start: int, end: int, left: int) -> int | None:
        _, right = self._scope(start, end, commas=False)
        before, after = self.qualifiers
        nearest = min(
            (
                (distance, side, qualifier)
                for side, candidates in (
                    (0, self._cues_before(before, start, left)),
                    (1, self._cues_after(after, end, right)),
                )
                for qualifier, distance in candidates
            ),
            default=None,
        )
        return None if nearest is None else _QUALIFIER_VALUE[nearest[2]]


def _overlaps(match: re.Match[str], spans: list[tuple[int, int]]) -> bool:
    return any(match.start() < end and match.end() > start for start, end in spans)


def _mentions(
    observation: _Observation, text: str, not_assessed: list[tuple[int, int]]
) -> list[tuple[Mention, re.Match[str]]]:
    found = [(kind, match) for kind, pattern in observation.mentions for match in pattern.finditer(text)]
    if not found or (observation.exclusions is None and not not_assessed):
        return found
    excluded = not_assessed
    if observation.exclusions is not None:
        excluded = excluded + [m.span() for m in observation.exclusions.finditer(text)]
    return [(kind, match) for kind, match in found if not _overlaps(match, excluded)]


def _aggregate(values: list[int]) -> int:
    """CheXpert's rule for several mentions: positive beats uncertain beats negative."""
    if POSITIVE in values:
        return POSITIVE
    return UNCERTAIN if UNCERTAIN in values else NEGATIVE


@functools.lru_cache(maxsize=1 << 16)
def label_sentence(text: str) -> tuple[tuple[tuple[str, int], ...], bool]:
    """The (observation, value) of each mention in one normalised sentence, and whether it states an
    abnormality outside the 14. Cached: reports repeat sentences ("the lungs are clear") a lot."""
    sentence = None  # cues are looked for only in sentences that mention something
    not_assessed = [m.span() for m in _NOT_ASSESSED.finditer(text)]
    found: list[tuple[str, int]] = []
    for observation in _OBSERVATIONS:
        for kind, match in _mentions(observation, text, not_assessed):
            sentence = sentence or _Sentence(text)
            value = sentence.classify(match.start(), match.end(), kind)
            if value is None:
                continue
            found.append((observation.name, value))
            if value != NEGATIVE and _HEART_FAILURE.fullmatch(match.group()):
                found.append(("Cardiomegaly", UNCERTAIN))
    other_finding = False
    for match in _OTHER_FINDINGS.finditer(text):
        if _overlaps(match, not_assessed):
            continue
        sentence = sentence or _Sentence(text)
        if sentence.classify(match.start(), match.end(), Mention.FINDING) != NEGATIVE:
            other_finding = True
            break
    return tuple(found), other_finding


class RuleBasedLabeler:
    """Offline CheXpert labeler. `label_report(text)` → {observation: 1 / 0 / -1 / None} for all 14."""

    name = "rules"

    def label_report(self, report: str) -> Labels:
        labels = blank_labels()
        sentences = split_sentences(report)
        if not sentences:
            return labels  # nothing stated: not even "No Finding"
        values: dict[str, list[int]] = {}
        other_finding = False
        for text in sentences:
            found, other = label_sentence(text)
            other_finding = other_finding or other
            for name, value in found:
                values.setdefault(name, []).append(value)
        for name, found_values in values.items():
            labels[name] = _aggregate(found_values)
        finding = other_finding or any(
            labels[name] in (POSITIVE, UNCERTAIN)
            for name in CHEXPERT_LABELS
            if name not in (NO_FINDING, SUPPORT_DEVICES)
        )
        labels[NO_FINDING] = None if finding else POSITIVE
        return labels

    def label(self, reports: Sequence[str], progress: bool = False) -> list[Labels]:
        return [
            self.label_report(report)
            for report in tqdm(reports, desc="labelling", unit="report", disable=None if progress else True)
        ]
