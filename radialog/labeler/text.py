"""Report text → the lowercased sentences the rule-based labeler reads.

Reports arrive as free text (generated reports), as MIMIC-CXR/IU X-ray sections with headers
("FINDINGS:", "IMPRESSION:"), with numbered or bulleted lists and with anonymisation tokens
("XXXX" in IU X-ray, "___" in MIMIC-CXR). Sections that describe the request rather than the image
(indication, history, comparison, technique) are dropped: "r/o pneumonia" there is not a finding.
"""

from __future__ import annotations

import re

# Headers whose text is about the request or the exam, not about the image.
SKIPPED_SECTIONS = frozenset(
    {
        "indication",
        "indications",
        "history",
        "clinical history",
        "clinical indication",
        "clinical information",
        "reason for exam",
        "reason for examination",
        "reason for study",
        "comparison",
        "comparisons",
        "technique",
        "examination",
        "exam",
        "procedure",
        "notification",
    }
)
KEPT_SECTIONS = frozenset({"findings", "finding", "impression", "impressions", "conclusion", "opinion", "report"})

# A header: a known section name at the start of the text, of a line or of a sentence, then a colon.
_HEADER = re.compile(
    r"(?:^|(?<=\n)|(?<=[.;]\s))[ \t]*(?P<name>"
    + "|".join(sorted((re.escape(n) for n in SKIPPED_SECTIONS | KEPT_SECTIONS), key=len, reverse=True))
    + r")[ \t]*:",
    re.IGNORECASE,
)
# IU X-ray replaces identifying words with XXXX (also inside words: "x-XXXX"); MIMIC-CXR with ___.
_ANONYMISED = re.compile(r"x{3,}|_{2,}", re.IGNORECASE)
# List markers at the start of a line or after whitespace: "1.", "2)", "-", "*", "•".
_LIST_MARKER = re.compile(r"(?:^|(?<=\s))(?:\d{1,2}[.)]|[-*•·])(?=\s)")
# Sentence ends: . ! ; : followed by whitespace or the end (so "2.5 cm" and "10:30" stay whole),
# a blank line, or a line break before a list marker.
_SENTENCE_END = re.compile(r"[.!;:]+(?=\s|$)|\n\s*\n|\n(?=\s*(?:\d{1,2}[.)]|[-*•·])\s)")
# CheXpert's labeler reads "a/b" as "a or b" (and "and/or" as "or").
_SLASH = re.compile(r"(?<=[a-z])\s*/\s*(?=[a-z])")
_AND_OR = re.compile(r"\band\s*/\s*or\b")
_SPACE = re.compile(r"\s+")
_COMMA = re.compile(r"\s*,\s*")


def select_sections(report: str) -> str:
    """Drop indication/history/comparison/technique sections; keep the rest (with or without headers)."""
    headers = list(_HEADER.finditer(report))
    if not headers:
        return report
    kept = [report[: headers[0].start()]]
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following is not None else len(report)
        if header.group("name").lower() not in SKIPPED_SECTIONS:
            # The header ends a sentence: "FINDINGS: The heart..." must not run into the text before it.
            kept.append(". " + report[header.end() : end])
    return " ".join(kept)


def normalise(sentence: str) -> str:
    sentence = _AND_OR.sub("or", sentence.lower())
    sentence = _SLASH.sub(" or ", sentence)
    sentence = _COMMA.sub(", ", sentence)
    return _SPACE.sub(" ", sentence).strip(" ,-")


def split_sentences(report: str) -> list[str]:
    """The report's image-describing sentences, lowercased, single-spaced, list markers removed."""
    text = _ANONYMISED.sub("xxxx", select_sections(report))
    sentences = []
    for chunk in _SENTENCE_END.split(text):
        sentence = normalise(_LIST_MARKER.sub(" ", chunk))
        if any(ch.isalpha() for ch in sentence):
            sentences.append(sentence)
    return sentences
