"""Instruct data for synthetic studies: every RaDialog task, each answer known by construction.

A synthetic study knows what was drawn (which findings, on which side, which device) and which sentence of
its report states each finding, so every answer is exact without a teacher model:

- RG: the report. Follow-up samples also train their report turn, since it is the reference.
- CPbQA: yes/no about one finding, in RaDialog's wording ("yes"/"no"), in other wordings and in lay ones
  ("Is the heart too big?"); CPaQA: "which findings", answered as RaDialog's findings list.
- RQA: region questions (heart, lungs, one lung, pleura, devices, the side of a finding), answered from the
  drawing.
- CO: remove a finding the report states or add one it lacks, in RaDialog's wording and in free text; the
  answer is the report with the finding's sentence dropped (and a sentence denying it) or added.
- EL / SU: the template teacher (`instruct_data.plain_language`).
- Multi-turn: a question after a correction sees the corrected report, as the app builds it, and is
  answered from that report; and two questions in a row.

Every wording list has a `train` and an `eval` part: training uses only `train`; the conversation benchmark
asks in `eval` wordings, which the model never saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from radialog.chat import PLAIN_LANGUAGE_PROMPT, SUMMARY_PROMPT
from radialog.instruct_data import templates
from radialog.instruct_data.correction import split_report
from radialog.instruct_data.plain_language import TemplateTeacher
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import (
    REGION_QUESTIONS,
    build_correction_prompt,
    build_finding_question,
    format_predicted_findings,
)
from radialog.synthetic import (
    DRAWN_LABELS,
    LATERAL_FINDINGS,
    NO_FINDING,
    SUPPORT_DEVICES,
    Sentence,
    SentenceBank,
    SyntheticSample,
)
from radialog.training.conversations import report_request

Wordings = dict[str, tuple[str, ...]]  # "train" / "eval" → templates

# Names that fit "Is there <x>?" / "The patient also has <x>".
FINDING_NAMES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly", "an enlarged heart"),
    "Pleural Effusion": ("a pleural effusion", "pleural effusion", "an effusion"),
    "Pneumothorax": ("a pneumothorax", "pneumothorax"),
    "Lung Opacity": ("a lung opacity", "an opacity in the lungs", "airspace disease"),
    "Consolidation": ("consolidation", "an area of consolidation"),
    SUPPORT_DEVICES: ("a support device", "a tube or line", "a medical device", "a catheter or tube"),
    "Enlarged Cardiomediastinum": ("an enlarged cardiomediastinum", "a widened mediastinum"),
    "Edema": ("pulmonary edema", "edema"),
    "Atelectasis": ("atelectasis",),
    "Pneumonia": ("pneumonia",),
    "Lung Lesion": ("a lung lesion", "a lung nodule"),
    "Fracture": ("a fracture", "a rib fracture"),
    "Pleural Other": ("pleural thickening",),
}
# Names that fit "There is no <x>" / "the <x>".
BARE_NAMES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly", "enlarged heart"),
    "Pleural Effusion": ("pleural effusion", "effusion"),
    "Pneumothorax": ("pneumothorax",),
    "Lung Opacity": ("lung opacity", "opacity"),
    "Consolidation": ("consolidation",),
    SUPPORT_DEVICES: ("support device", "tube or line"),
}

YES_NO_QUESTIONS: Wordings = {
    "train": (
        "Is there <x>?",
        "Does the patient have <x>?",
        "Do you see <x>?",
        "Can you see <x> on this image?",
        "Is there evidence of <x>?",
        "Does the report mention <x>?",
        "Any sign of <x>?",
        "Is <x> present?",
        "Can you find <x>?",
        "Do you think there is <x>?",
        "Is <x> visible?",
        "Does the film show <x>?",
        "Is <x> seen on the image?",
    ),
    "eval": ("Are there signs of <x>?", "Does this X-ray show <x>?", "Would you say there is <x>?"),
}
LAY_QUESTIONS: dict[str, Wordings] = {
    "Cardiomegaly": {
        "train": (
            "Is the heart enlarged?",
            "Is the heart too big?",
            "Is the heart bigger than normal?",
            "Is the heart bigger than it should be?",
            "Is the heart oversized?",
        ),
        "eval": ("Does the heart look large?", "Is the heart size increased?"),
    },
    "Pleural Effusion": {
        "train": (
            "Is there fluid around the lungs?",
            "Any fluid around the lungs?",
            "Is there fluid in the chest?",
            "Is there liquid around the lungs?",
            "Has fluid built up around a lung?",
        ),
        "eval": ("Is there any water around the lungs?", "Do you see fluid collecting around a lung?"),
    },
    "Pneumothorax": {
        "train": (
            "Is there a collapsed lung?",
            "Has a lung collapsed?",
            "Is there air leaking around the lung?",
            "Is there air outside the lung?",
            "Is a lung deflated?",
        ),
        "eval": ("Is there any air leak around the lungs?", "Is part of a lung collapsed?"),
    },
    "Lung Opacity": {
        "train": (
            "Is there a hazy area in the lungs?",
            "Are there any shadows on the lungs?",
            "Is any part of the lungs cloudy?",
            "Is there a cloudy patch on the lungs?",
            "Are the lungs hazy anywhere?",
        ),
        "eval": ("Do the lungs show any haziness?", "Is there a shadow on the lung?"),
    },
    "Consolidation": {
        "train": (
            "Is part of the lung filled in?",
            "Is there a dense area in the lungs?",
            "Does any part of the lung look solid?",
            "Is there a filled-in area of the lung?",
            "Is any lung tissue filled with fluid or pus?",
        ),
        "eval": ("Is there a solid-looking area in the lungs?", "Is a part of the lung dense and filled in?"),
    },
    SUPPORT_DEVICES: {
        "train": (
            "Are there any tubes or lines?",
            "Is there a medical device in place?",
            "Do you see a catheter or tube?",
            "Is there a tube in the patient?",
            "Is any line or catheter in place?",
            "Does the patient have any tubes?",
        ),
        "eval": ("Is any tube or line visible?", "Has a device been placed?"),
    },
}
FINDINGS_LIST_QUESTIONS: Wordings = {
    "train": templates.CPAQA,
    "eval": ("What are the findings in this image?", "Which abnormalities do you see?"),
}

# Region questions: the findings each region holds, and the patient side it is limited to.
REGIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "heart": (frozenset({"Cardiomegaly"}), None),
    "lungs": (frozenset(LATERAL_FINDINGS), None),
    "right lung": (frozenset(LATERAL_FINDINGS), "right"),
    "left lung": (frozenset(LATERAL_FINDINGS), "left"),
    "pleura": (frozenset({"Pleural Effusion", "Pneumothorax"}), None),
    "devices": (frozenset({SUPPORT_DEVICES}), None),
}
REGION_WORDINGS: dict[str, Wordings] = {
    "heart": {
        "train": (
            REGION_QUESTIONS[0],
            "How does the heart look?",
            "Is the heart size normal?",
            "Describe the heart.",
            "How is the heart?",
        ),
        "eval": ("What about the heart?", "Is there anything wrong with the heart?"),
    },
    "lungs": {
        "train": (
            REGION_QUESTIONS[1],
            "Are there any abnormalities in the lungs?",
            "How do the lungs look?",
            "Describe the lungs.",
            "What do the lungs show?",
        ),
        "eval": ("Tell me about the lungs.", "Is anything wrong with the lungs?"),
    },
    "right lung": {
        "train": (
            REGION_QUESTIONS[2],
            "How does the right lung look?",
            "Describe the right lung.",
            "Tell me about the right lung.",
        ),
        "eval": ("What do you see in the right lung?", "Is the right lung normal?"),
    },
    "left lung": {
        "train": (
            REGION_QUESTIONS[3],
            "How does the left lung look?",
            "Describe the left lung.",
            "Tell me about the left lung.",
        ),
        "eval": ("What do you see in the left lung?", "Is the left lung normal?"),
    },
    "pleura": {
        "train": (
            REGION_QUESTIONS[4],
            "Are the pleural spaces normal?",
            "Describe the pleura.",
            "How do the pleural spaces look?",
        ),
        "eval": ("Anything in the pleural space?", "What about the pleura?"),
    },
    "devices": {
        "train": (
            REGION_QUESTIONS[5],
            "Which devices are in place?",
            "What tubes or lines are there?",
            "Tell me about the devices.",
        ),
        "eval": ("What devices can you see?", "Is the patient intubated or lined?"),
    },
}
SIDE_QUESTIONS: Wordings = {
    "train": ("Which side is the <x> on?", "On which side is the <x>?"),
    "eval": ("Where is the <x>?", "Is the <x> on the left or the right?"),
}
DEVICE_NAMES = {0: "an endotracheal tube", 1: "a nasogastric tube", 2: "a central venous catheter"}
_REGION_NONE = {
    "heart": "The heart is normal in size.",
    "lungs": "The lungs are clear.",
    "right lung": "The right lung is clear.",
    "left lung": "The left lung is clear.",
    "pleura": "There is no pleural effusion or pneumothorax.",
    "devices": "No tubes or lines are seen.",
}

REMOVE_REQUESTS: Wordings = {
    "train": (
        "I disagree, there is no <x>.",
        "There is no <x>, please fix the report.",
        "Please remove the <x> from the report.",
        "The patient doesn't have <x>. Correct the report.",
        "That's wrong, I see no <x>. Update the report.",
        "No <x> here; please correct that.",
        "Wrong: the <x> is not there. Fix the report.",
        "There's no sign of <x>. Please revise the report.",
        "Take out the <x>, it isn't there.",
        "I can't find <x> on this film. Please change the report.",
        "Please correct the report: no <x>.",
        "You are wrong about the <x>; it is not there. Please fix it.",
        "Remove the <x>, the patient does not have it.",
        "There isn't any <x>. Rewrite the report.",
    ),
    "eval": ("Actually there is no <x>, please fix it.", "I don't see any <x>; correct the report."),
}
ADD_REQUESTS: Wordings = {
    "train": (
        "You missed <x>; please add it.",
        "The patient also has <x>. Update the report.",
        "Please mention <x> too.",
        "I see <x>, add it to the report.",
        "You forgot the <x>. Please add it.",
        "There is <x> as well; update the report.",
        "Please revise the report to include <x>.",
        "I can also see <x>. Correct the report.",
        "The report should mention <x>.",
        "Include <x> in the report.",
        "You left out <x>. Fix the report.",
        "Please add <x> to the findings.",
    ),
    "eval": ("Add <x> to the report, please.", "There is also <x>; include it."),
}
EXPLAIN_REQUESTS: Wordings = {
    "train": (PLAIN_LANGUAGE_PROMPT, *templates.EL),
    "eval": (
        "Explain this for the patient in plain words.",
        "Can you tell the patient what this means in everyday words?",
    ),
}
SUMMARY_REQUESTS: Wordings = {
    "train": (
        SUMMARY_PROMPT,
        "Give me the key points as a bulleted list.",
        "List the main points of the report as bullets.",
        "Write a short bullet-point summary of the findings.",
        "Bullet points, please.",
        "Turn the report into a bulleted list.",
        "Break the findings down into short bullets.",
    ),
    "eval": ("Summarize as bullets.", "Sum up the report in a few bullet points."),
}

# Share of each task among the samples drawn for a study.
TASK_WEIGHTS = {
    "CPbQA": 0.22,
    "RQA": 0.16,
    "CO": 0.20,
    "EL": 0.10,
    "SU": 0.07,
    "CPaQA": 0.06,
    "CO+QA": 0.09,
    "QA+QA": 0.05,
    "RG": 0.05,
}


def check_task_weights(task_weights: dict[str, float]) -> None:
    """Raises ValueError unless `task_weights` names known tasks with weights ≥ 0, one of them > 0."""
    unknown = set(task_weights) - set(TASK_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown synthetic tasks {sorted(unknown)}; the tasks are {list(TASK_WEIGHTS)}")
    if any(w < 0 for w in task_weights.values()) or not any(w > 0 for w in task_weights.values()):
        raise ValueError("task weights must be 0 or more, and one of them more than 0")


def patient_side(drawn_side: int) -> str:
    """The drawing's image side (-1 image left, +1 image right, 0 both) as a report names it: the patient's."""
    return {-1: "right", 1: "left", 0: "both"}[drawn_side]


@dataclass(frozen=True)
class SyntheticStudy:
    """What the generator knows of one study."""

    id: str
    image: str  # the manifest's image path
    report: str
    present: frozenset[str]  # drawn findings
    sides: dict[str, str]  # lateral finding → "left", "right" or "both" (patient side)
    device_kind: int | None
    statements: dict[str, Sentence]  # the report sentence stating each drawn finding
    labels: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def of(cls, sample: SyntheticSample, image: str) -> SyntheticStudy:
        sides = {f.name: patient_side(f.side) for f in sample.case.drawn if f.name in LATERAL_FINDINGS}
        kind = next((f.kind for f in sample.case.drawn if f.name == SUPPORT_DEVICES), None)
        return cls(
            sample.id,
            image,
            sample.report,
            frozenset(sample.case.present),
            sides,
            kind,
            sample.statements,
            sample.labels,
        )

    @property
    def predicted_findings(self) -> str:
        return format_predicted_findings([n for n in CHEXPERT_LABELS if self.labels.get(n) == 1])


def findings_answer(present: Iterable[str]) -> str:
    """CPaQA's answer: RaDialog's findings list of what is present (No Finding when nothing but devices)."""
    present = set(present)
    if not present - {SUPPORT_DEVICES}:
        present.add(NO_FINDING)
    return format_predicted_findings([n for n in CHEXPERT_LABELS if n in present])


def _finding_phrase(name: str, side: str) -> str:
    if name == "Pleural Effusion":
        return "bilateral pleural effusions" if side == "both" else f"a {side} pleural effusion"
    if name == "Pneumothorax":
        return f"a {side} pneumothorax"
    return f"an opacity in the {side} lung" if name == "Lung Opacity" else f"consolidation in the {side} lung"


def region_findings(present: Iterable[str], sides: dict[str, str], region: str) -> list[str]:
    """The drawn findings a region question is about, in label order."""
    names, side = REGIONS[region]
    return [
        n for n in DRAWN_LABELS if n in set(present) and n in names and (side is None or sides.get(n) in (side, "both"))
    ]


def region_answer(present: Iterable[str], sides: dict[str, str], device_kind: int | None, region: str) -> str:
    found = region_findings(present, sides, region)
    if not found:
        return _REGION_NONE[region]
    if region == "heart":
        return "The heart is enlarged."
    if region == "devices":
        return f"There is {DEVICE_NAMES.get(device_kind, 'a medical device')}."
    phrases = [_finding_phrase(n, sides[n]) for n in found]
    joined = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"There is {joined}."


def side_answer(present: Iterable[str], sides: dict[str, str], name: str, bare: str) -> str:
    if name not in set(present):
        return f"There is no {bare}."
    side = sides[name]
    return f"The {bare} is on both sides." if side == "both" else f"The {bare} is on the {side}."


def yes_no_question(name: str, rng: random.Random, split: str = "train", style: str | None = None) -> tuple[str, str]:
    """(question, style): RaDialog's wording, a generic one, or a lay one (drawn findings only)."""
    styles = ["radialog", "generic"] + (["lay"] if name in LAY_QUESTIONS else [])
    style = style or rng.choice(styles)
    if style == "radialog":
        return build_finding_question(name), style
    if style == "lay":
        return rng.choice(LAY_QUESTIONS[name][split]), style
    return rng.choice(YES_NO_QUESTIONS[split]).replace("<x>", rng.choice(FINDING_NAMES[name])), style


def yes_no_answer(present: bool, style: str) -> str:
    """RaDialog answered its own wording with a bare "yes"/"no"; other wordings get a sentence's "Yes."/"No."."""
    if style == "radialog":
        return "yes" if present else "no"
    return "Yes." if present else "No."


class CorrectionWriter:
    """Reports with a finding removed or added, from the sentence bank the reports were written from."""

    def __init__(self, bank: SentenceBank):
        self.bank = bank
        self.sentences: dict[str, Sentence] = {}
        for group in (*bank.positive.values(), *bank.negating.values(), bank.normal):
            self.sentences.update((s.text, s) for s in group)

    def _sentences(self, report: str) -> list[Sentence]:
        return [self.sentences.get(t, Sentence(t, frozenset(), frozenset())) for t in split_report(report)]

    def remove(self, report: str, name: str, rest: frozenset[str], rng: random.Random) -> str:
        """`report` without the sentences stating `name`, plus one denying it (none for devices)."""
        kept = [s for s in self._sentences(report) if name not in s.positive]
        denials = [s for s in self.bank.negating.get(name, []) if not s.denies & rest and s not in kept]
        if denials:
            kept.append(rng.choice(denials))
        if not kept:
            kept = [rng.choice([s for s in self.bank.normal if not s.denies & rest])]
        return " ".join(s.text for s in sorted(kept, key=lambda s: s.order))

    def add(self, report: str, name: str, present: frozenset[str], rng: random.Random) -> tuple[str, Sentence]:
        """`report` with a sentence stating `name` (returned too), and without the sentences that deny it."""
        kept = [s for s in self._sentences(report) if name not in s.denies]
        added = rng.choice([s for s in self.bank.positive[name] if not s.denies & present] or self.bank.positive[name])
        kept.append(added)
        return " ".join(s.text for s in sorted(kept, key=lambda s: s.order)), added


def _message(role: str, content: str, train: bool = True) -> dict:
    message = {"role": role, "content": content}
    if not train:
        message["train"] = False
    return message


@dataclass
class SyntheticTaskWriter:
    """Samples of every task for synthetic studies; `split` "train" or "eval" picks the wordings."""

    bank: SentenceBank
    split: str = "train"
    teacher: TemplateTeacher = field(default_factory=TemplateTeacher)

    def __post_init__(self) -> None:
        self.corrections = CorrectionWriter(self.bank)

    # ---------------------------------------------------------------- single questions (question, answer)
    def yes_no(
        self, study: SyntheticStudy, rng: random.Random, present: frozenset[str] | None = None, about: str | None = None
    ) -> tuple[str, str]:
        present = study.present if present is None else present
        if about is not None:
            name = about
        elif present and rng.random() < 0.5:
            name = rng.choice(sorted(present))
        elif rng.random() < 0.75:
            name = rng.choice([n for n in DRAWN_LABELS if n not in present] or list(DRAWN_LABELS))
        else:
            name = rng.choice([n for n in CHEXPERT_LABELS if n not in DRAWN_LABELS and n != NO_FINDING])
        question, style = yes_no_question(name, rng, self.split)
        return question, yes_no_answer(name in present, style)

    def findings_list(
        self, study: SyntheticStudy, rng: random.Random, present: frozenset[str] | None = None
    ) -> tuple[str, str]:
        present = study.present if present is None else present
        return rng.choice(FINDINGS_LIST_QUESTIONS[self.split]), findings_answer(present)

    def region(
        self,
        study: SyntheticStudy,
        rng: random.Random,
        present: frozenset[str] | None = None,
        sides: dict[str, str] | None = None,
    ) -> tuple[str, str]:
        present = study.present if present is None else present
        sides = study.sides if sides is None else sides
        lateral = sorted(n for n in present if n in LATERAL_FINDINGS)
        if rng.random() < 0.25:
            name = rng.choice(lateral) if lateral and rng.random() < 0.7 else rng.choice(LATERAL_FINDINGS)
            bare = BARE_NAMES[name][0]
            question = rng.choice(SIDE_QUESTIONS[self.split]).replace("<x>", bare)
            return question, side_answer(present, sides, name, bare)
        region = rng.choice(list(REGIONS))
        question = rng.choice(REGION_WORDINGS[region][self.split])
        return question, region_answer(present, sides, study.device_kind, region)

    def correction(self, study: SyntheticStudy, rng: random.Random) -> tuple[str, str, frozenset[str], dict[str, str]]:
        """(instruction, corrected report, findings after the correction and their sides)."""
        removable = sorted(study.present)
        sides = study.sides
        addable = [n for n in DRAWN_LABELS if n not in study.present]
        remove = rng.choice(removable) if removable and (not addable or rng.random() < 0.5) else None
        add = None if remove is not None else rng.choice(addable)
        wording = rng.random()
        if remove is not None:
            after = study.present - {remove}
            corrected = self.corrections.remove(study.report, remove, after, rng)
            if wording < 0.5:
                instruction = build_correction_prompt(remove=[remove])
            else:
                instruction = rng.choice(REMOVE_REQUESTS[self.split]).replace("<x>", rng.choice(BARE_NAMES[remove]))
        else:
            after = study.present | {add}
            corrected, added = self.corrections.add(study.report, add, study.present, rng)
            if add in LATERAL_FINDINGS:
                sides = {**sides, add: patient_side(added.side or 0)}
            if wording < 0.5:
                instruction = build_correction_prompt(add=[add])
            else:
                instruction = rng.choice(ADD_REQUESTS[self.split]).replace("<x>", rng.choice(FINDING_NAMES[add]))
        return instruction, corrected, frozenset(after), sides

    # ---------------------------------------------------------------- whole samples
    def sample(self, study: SyntheticStudy, task: str, rng: random.Random, key: str = "") -> dict:
        request = report_request(study.predicted_findings)
        report = _message("assistant", study.report)
        turns: list[dict]
        if task == "RG":
            turns = []
        elif task in ("CPbQA", "CPaQA", "RQA"):
            ask = {"CPbQA": self.yes_no, "CPaQA": self.findings_list, "RQA": self.region}[task]
            turns = list(_pair(*ask(study, rng)))
        elif task == "EL":
            turns = list(_pair(rng.choice(EXPLAIN_REQUESTS[self.split]), self.teacher.explain(study.report)))
        elif task == "SU":
            turns = list(_pair(rng.choice(SUMMARY_REQUESTS[self.split]), self.teacher.summarize(study.report)))
        elif task == "CO":
            instruction, corrected, _, _ = self.correction(study, rng)
            turns = list(_pair(instruction, corrected))
        elif task == "CO+QA":
            # The app's conversation after a correction: the corrected report in the report's place.
            _, corrected, after, sides = self.correction(study, rng)
            report = _message("assistant", corrected, train=False)
            if rng.random() < 0.3:
                turns = list(_pair(*self.region(study, rng, after, sides)))
            else:
                changed = next(iter(after ^ study.present))
                turns = list(_pair(*self.yes_no(study, rng, after, changed if rng.random() < 0.7 else None)))
        elif task == "QA+QA":
            first = rng.choice([self.yes_no, self.region, self.findings_list])(study, rng)
            turns = [*_pair(*first), *_pair(*self.yes_no(study, rng))]
        else:
            raise ValueError(f"unknown synthetic task {task!r}")
        return {
            "id": f"{study.id}:{task}{key}",
            "image": study.image,
            "task": task,
            "messages": [request, report, *turns],
        }

    def samples(
        self,
        studies: Sequence[SyntheticStudy],
        per_study: int,
        seed: int,
        task_weights: dict[str, float] | None = None,
    ) -> list[dict]:
        """`per_study` samples per study, their tasks drawn by `task_weights` (default `TASK_WEIGHTS`)."""
        task_weights = TASK_WEIGHTS if task_weights is None else task_weights
        check_task_weights(task_weights)
        rng = random.Random(seed)
        tasks, weights = list(task_weights), list(task_weights.values())
        samples = []
        for study in studies:
            for k, task in enumerate(rng.choices(tasks, weights, k=per_study)):
                samples.append(self.sample(study, task, rng, key=f":{k}"))
        rng.shuffle(samples)
        return samples


def _pair(question: str, answer: str) -> tuple[dict, dict]:
    return _message("user", question), _message("assistant", answer)
