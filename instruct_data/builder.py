"""RaDialog's instruct data set from a manifest: report generation plus the instruct tasks.

As in RaDialog's `data/create_data.py`:
- RG: every training record, stratified (records with a finding doubled, "no finding" records cut to
  1/14 of the result).
- The instruct tasks each take a share of the training records, shuffled: EL, CO, SU, RQA and
  CheXpert QA (its share halved between CPbQA, a yes/no question that is "yes" 60% of the time, and
  CPaQA, "list all findings").
- EL and SU are answered by a teacher LLM when one is given (RaDialog's Vicuna-13b), by the template
  teacher (`instruct_data.plain_language`) otherwise; RQA needs the teacher LLM.
- Multi-turn samples open with the report request answered by a report (the reference, or the
  wrong report for CO), then the task's question and its answer. Only the last answer is a training
  target, as in RaDialog: earlier assistant turns carry `"train": false`.

The report request is stored as what it asks (`radialog.training.conversations.report_request`: the
predicted findings text), not as prompt text: the trainer renders it in the prompt of the model it
trains, so the same file trains RaDialog and R2GenGPT.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from radialog.data import ManifestRecord
from radialog.data.manifest import check_labels
from radialog.errors import InputError
from radialog.instruct_data import templates
from radialog.instruct_data.correction import NO_FINDING, SentencePool, make_correction
from radialog.instruct_data.plain_language import TemplateTeacher
from radialog.instruct_data.teacher import Teacher, TeacherConfig
from radialog.jsonl import iter_jsonl
from radialog.labeler.base import ReportLabeler
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import format_predicted_findings
from radialog.training.conversations import report_request

logger = logging.getLogger(__name__)

TASKS = ("RG", "CO", "CPbQA", "CPaQA", "RQA", "EL", "SU")
# Shares of the training records, as RaDialog split them (its 6th share went to MIMIC-NLE reasoning).
SHARES = ("EL", "CO", "SU", "RQA", "CPQA")
CPBQA_POSITIVE = 0.6


@dataclass
class InstructConfig:
    seed: int = 0
    size: int | None = None  # keep at most this many samples (drawn before the teacher runs)
    split: str = "train"
    teacher: TeacherConfig | None = None


@dataclass
class InstructResult:
    samples: list[dict]
    stats: dict = field(default_factory=dict)


def predicted_findings(labels: dict[str, int | None] | None) -> str:
    """The "predicted findings" of the report prompt: RaDialog's text of the positive labels."""
    return format_predicted_findings([name for name in CHEXPERT_LABELS if (labels or {}).get(name) == 1])


def has_finding(labels: dict[str, int | None] | None) -> bool:
    """RaDialog's stratification: no finding is "No Finding" positive (devices allowed) or nothing positive."""
    labels = labels or {}
    return labels.get(NO_FINDING) != 1 and any(value == 1 for value in labels.values())


def stratified_indices(records: Sequence[ManifestRecord], rng: random.Random, repeats: int = 2) -> list[int]:
    with_finding = [i for i, r in enumerate(records) if has_finding(r.labels)]
    without = [i for i, r in enumerate(records) if not has_finding(r.labels)]
    with_finding = with_finding * repeats
    no_finding_count = min(len(without), int(len(with_finding) * 14 / 13 / 14))
    return with_finding + rng.sample(without, no_finding_count)


def _message(role: str, content: str, train: bool = True) -> dict:
    message = {"role": role, "content": content}
    if not train:
        message["train"] = False
    return message


def _sample(record: ManifestRecord, task: str, messages: list[dict], key: str = "") -> dict:
    return {"id": f"{record.id}:{task}{key}", "image": record.image, "task": task, "messages": messages}


def _follow_up(record: ManifestRecord, task: str, text: str, report: str, question: str, answer: str | None) -> dict:
    messages = [
        report_request(text),
        _message("assistant", report, train=False),
        _message("user", question),
        _message("assistant", answer or ""),
    ]
    return _sample(record, task, messages)


def _chexpert_qa(record: ManifestRecord, task: str, text: str, rng: random.Random) -> dict:
    found = [name for name in CHEXPERT_LABELS if (record.labels or {}).get(name) == 1]
    if task == "CPaQA":
        answer = format_predicted_findings(found)
        return _follow_up(record, task, text, record.findings, rng.choice(templates.CPAQA), answer)
    found = [name for name in found if name != NO_FINDING]
    if found and rng.random() < CPBQA_POSITIVE:
        finding, answer = rng.choice(found), "yes"
    else:
        finding, answer = rng.choice([n for n in CHEXPERT_LABELS[1:] if n not in found]), "no"
    question = rng.choice(templates.CPBQA).replace("<X>", finding.lower())
    return _follow_up(record, task, text, record.findings, question, answer)


def build_instruct_data(
    records: Sequence[ManifestRecord],
    labeler: ReportLabeler,
    config: InstructConfig | None = None,
    predictions: dict[str, dict[str, int | None]] | None = None,
) -> InstructResult:
    """All samples, shuffled, and counts per task. Same records and seed → the same samples."""
    config = config or InstructConfig()
    rng = random.Random(config.seed)
    records = [r for r in records if r.split in (config.split, None) and r.findings.strip()]
    if not records:
        raise InputError(f"no records with findings in split {config.split!r}")
    predictions = predictions or {}
    texts = {r.id: predicted_findings(predictions.get(r.id, r.labels)) for r in records}
    skipped: Counter[str] = Counter()

    samples: list[dict] = []
    for repeat, index in enumerate(stratified_indices(records, rng)):
        record = records[index]
        messages = [report_request(texts[record.id]), _message("assistant", record.findings)]
        samples.append(_sample(record, "RG", messages, key=f":{repeat}"))

    order = list(range(len(records)))
    rng.shuffle(order)
    shares = {name: [records[i] for i in order[k :: len(SHARES)]] for k, name in enumerate(SHARES)}
    pool = SentencePool([r.findings for r in records], labeler)
    for record in shares["CO"]:
        correction = make_correction(record.findings, pool, labeler, rng)
        if correction is None:
            skipped["CO (no change possible)"] += 1
            continue
        text = texts[record.id]
        samples.append(_follow_up(record, "CO", text, correction.wrong_report, correction.instruction, record.findings))
    for k, record in enumerate(shares["CPQA"]):
        samples.append(_chexpert_qa(record, "CPbQA" if k % 2 == 0 else "CPaQA", texts[record.id], rng))
    pending = []  # teacher tasks: the question now, the answer once the samples to keep are known
    for task in templates.TEACHER_TASKS:
        for record in shares[task]:
            question = rng.choice(templates.TEACHER_TASKS[task])
            pending.append(_follow_up(record, task, texts[record.id], record.findings, question, None))
    if config.teacher is None:
        # Without a teacher model, EL and SU come from the template teacher; RQA needs a model to answer.
        templated = TemplateTeacher(labeler)
        rqa = [s for s in pending if s["task"] == "RQA"]
        pending = [s for s in pending if s["task"] != "RQA"]
        for sample in pending:
            write = templated.explain if sample["task"] == "EL" else templated.summarize
            sample["messages"][3]["content"] = write(sample["messages"][1]["content"])
        skipped["RQA (no teacher model)"] = len(rqa)
        logger.info("no teacher model: %d RQA samples left out, EL/SU from templates (pass --teacher-model)", len(rqa))

    combined = samples + pending
    if config.size is not None and config.size < len(combined):
        keep = sorted(rng.sample(range(len(combined)), config.size))
        combined = [combined[i] for i in keep]
    asking = [s for s in combined if s["task"] in templates.TEACHER_TASKS] if config.teacher is not None else []
    if asking:
        answers = Teacher(config.teacher).answer(
            [s["messages"][1]["content"] for s in asking], [s["messages"][2]["content"] for s in asking]
        )
        for sample, answer in zip(asking, answers, strict=True):
            sample["messages"][3]["content"] = answer
        empty = {id(s) for s, answer in zip(asking, answers, strict=True) if not answer}
        skipped["RQA/EL/SU (empty teacher answer)"] = len(empty)
        combined = [s for s in combined if id(s) not in empty]
    rng.shuffle(combined)

    counts = Counter(s["task"] for s in combined)
    stats = {
        "records": len(records),
        "samples": len(combined),
        "tasks": {task: counts.get(task, 0) for task in TASKS},
        "skipped": {reason: n for reason, n in skipped.items() if n},
        "seed": config.seed,
    }
    return InstructResult(combined, stats)


def write_instruct_data(result: InstructResult, out: str | Path) -> Path:
    """OUT.jsonl (one sample per line) and OUT.stats.json beside it; returns the stats path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for sample in result.samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    stats_path = out.with_suffix(".stats.json")
    stats_path.write_text(json.dumps(result.stats, indent=2) + "\n", encoding="utf-8")
    return stats_path


def read_predictions(path: str | Path) -> dict[str, dict[str, int | None]]:
    """id → labels from a JSONL of {"id", "labels"} (the output of `radialog label` or a classifier)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: predictions file not found")
    predictions: dict[str, dict[str, int | None]] = {}
    for where, data in iter_jsonl(path):
        if "id" not in data or "labels" not in data:
            raise InputError(f"{where}: expected an object with 'id' and 'labels'")
        predictions[str(data["id"])] = check_labels(data["labels"], where) or {}
    return predictions
