"""A deterministic teacher for the plain-language (EL) and summary (SU) tasks: templates, not a model.

RaDialog had Vicuna-13b rewrite each report. A template teacher gives answers known by construction: every
sentence of the report is labelled, and each finding it states becomes a short sentence from a lay
glossary, so the plain text keeps every finding, names the side, and drops the jargon (the labeler
reads the lay wording too, which is how the conversation benchmark checks that nothing was lost). The
summary keeps the report's own finding sentences as bullets. It works on any report the labeler reads; a
teacher LLM (`instruct_data.teacher`) stays the option for free-form answers on real data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from radialog.instruct_data.correction import split_report
from radialog.labeler import RuleBasedLabeler
from radialog.labeler.base import ReportLabeler

# Per finding: (stated, with {where} for a side or None; uncertain noun phrase).
# {where} is "the left lung", "the right lung" or "both lungs".
LAY_GLOSSARY: dict[str, tuple[str, str]] = {
    "Cardiomegaly": ("The heart looks bigger than normal.", "a large heart"),
    "Enlarged Cardiomediastinum": ("The middle of the chest looks wider than normal.", "a wide middle of the chest"),
    "Pleural Effusion": ("There is fluid around {where}.", "fluid around the lungs"),
    "Pneumothorax": ("Air has leaked around {where}, and part of it has collapsed.", "an air leak around a lung"),
    "Lung Opacity": ("There is a hazy area in {where}.", "a hazy area in the lungs"),
    "Consolidation": ("Part of {where} is filled in and looks solid.", "a filled-in part of the lung"),
    "Support Devices": ("A medical tube or line is in place.", "a medical tube or line"),
    "Edema": ("There is extra fluid inside the lungs.", "extra fluid inside the lungs"),
    "Atelectasis": ("Part of {where} is not fully open.", "a part of the lung that is not fully open"),
    "Pneumonia": ("There are signs of a lung infection.", "a lung infection"),
    "Lung Lesion": ("There is a spot in {where}.", "a spot in the lungs"),
    "Fracture": ("A bone looks broken.", "a broken bone"),
    "Pleural Other": ("The lining around {where} looks thick.", "a thick lining around the lungs"),
}
NORMAL_STUDY = "This chest X-ray looks normal."
REST_NORMAL = "The rest of the chest looks normal."
NORMAL_SUMMARY = "- No acute cardiopulmonary abnormality."


def where(side: str | None) -> str:
    """The lay place of a finding on `side` ("left", "right", "both" or None: unknown)."""
    return {"left": "the left lung", "right": "the right lung", "both": "both lungs"}.get(side or "", "the lungs")


def sentence_side(sentence: str) -> str | None:
    """The patient side a report sentence names: "left", "right", "both" or None."""
    words = set(re.findall(r"[a-z]+", sentence.lower()))
    if words & {"bilateral", "bilaterally", "bibasilar", "bibasal", "biapical", "both"} or {"left", "right"} <= words:
        return "both"
    return "right" if "right" in words else ("left" if "left" in words else None)


@dataclass
class TemplateTeacher:
    """Plain-language rewrites and bullet summaries of reports, from the labeler's reading of each sentence."""

    labeler: ReportLabeler | None = None

    def __post_init__(self) -> None:
        self.labeler = self.labeler or RuleBasedLabeler()

    def _read(self, report: str) -> list[tuple[str, dict[str, int | None]]]:
        sentences = split_report(report)
        return list(zip(sentences, self.labeler.label(sentences), strict=True))

    def explain(self, report: str) -> str:
        """The report in plain words: a short lay sentence per finding stated or doubted, in the glossary's
        order, then one line for everything it calls normal or rules out. A fixed shape rather than a
        sentence-by-sentence rewrite, since the report's many ways of ruling things out say nothing more to a
        patient than "the rest looks normal"."""
        read = self._read(report)
        lay: list[str] = []
        for name, (positive, doubtful) in LAY_GLOSSARY.items():
            sentence = next((s for s, labels in read if labels.get(name) == 1), None)
            if sentence is not None:
                lay.append(positive.format(where=where(sentence_side(sentence))))
            elif any(labels.get(name) == -1 for _, labels in read):
                lay.append(f"There might be {doubtful}.")
        if not lay:
            return NORMAL_STUDY
        if any(0 in labels.values() or not _stated([(s, labels)]) for s, labels in read):  # something normal
            lay.append(REST_NORMAL)
        return " ".join(lay)

    def summarize(self, report: str) -> str:
        """Bullets: each sentence that states or doubts a finding, then the findings ruled out in one line."""
        read = self._read(report)
        bullets = [f"- {sentence}" for sentence, labels in read if _stated([(sentence, labels)])]
        stated = _stated(read)
        denied = [
            name.lower()
            for name in LAY_GLOSSARY
            if name not in stated and any(labels.get(name) == 0 for _, labels in read)
        ]
        if not bullets:
            return NORMAL_SUMMARY
        if denied:
            bullets.append(
                "- No "
                + (" or ".join(denied) if len(denied) < 3 else ", ".join(denied[:-1]) + " or " + denied[-1])
                + "."
            )
        return "\n".join(bullets)


def _stated(read: list[tuple[str, dict[str, int | None]]]) -> set[str]:
    """Findings the sentences state or doubt ("No Finding" is the absence of them, not one)."""
    return {name for _, labels in read for name, value in labels.items() if value in (1, -1) and name in LAY_GLOSSARY}
