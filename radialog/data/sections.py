"""Sections of free-text MIMIC-CXR reports: FINDINGS, IMPRESSION and INDICATION.

MIMIC-CXR reports put each section under an upper-case header at the start of a line
("FINDINGS:", "IMPRESSION:"), with spelling variants and synonyms ("CONCLUSION:", "HISTORY:").
Text before the first header is the preamble ("FINAL REPORT", the exam name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Upper-case header at a line start; the body may begin on the same line.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&-]{1,40}?)[ \t]*:", re.MULTILINE)

# Header (lower-cased) → the section it belongs to; headers not listed are kept under their own name.
SECTION_NAMES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "chest, two views": "findings",
    "reference findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "impression/findings": "impression",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
}


@dataclass(frozen=True)
class ReportSections:
    findings: str
    impression: str
    indication: str


def _clean(text: str) -> str:
    return " ".join(text.split())


def split_sections(text: str) -> dict[str, str]:
    """Section name → its text (whitespace collapsed); repeated sections are joined, empty ones dropped."""
    headers = list(_HEADER.finditer(text))
    sections: dict[str, list[str]] = {}
    preamble = text[: headers[0].start()] if headers else text
    if preamble.strip():
        sections["preamble"] = [preamble]
    for header, following in zip(headers, [*headers[1:], None], strict=False):
        name = header.group(1).strip().lower()
        name = SECTION_NAMES.get(name, name)
        body = text[header.end() : following.start() if following is not None else len(text)]
        if body.strip():
            sections.setdefault(name, []).append(body)
    return {name: _clean(" ".join(parts)) for name, parts in sections.items()}


def parse_report(text: str) -> ReportSections:
    """Findings, impression and indication ("" where absent; history stands in for a missing indication)."""
    sections = split_sections(text)
    return ReportSections(
        findings=sections.get("findings", ""),
        impression=sections.get("impression", ""),
        indication=sections.get("indication", sections.get("history", "")),
    )
