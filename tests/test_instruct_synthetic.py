"""Instruct data for synthetic studies (instruct_data/synthetic_tasks.py) and its template teacher.

Each answer is checked against an oracle the generator does not use to write it: the rule-based labeler
reading the report in the conversation, the drawing's own sides, and the Flesch-Kincaid grade.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest
import textstat

from radialog.cli import main
from radialog.instruct_data import synthetic_tasks as tasks
from radialog.instruct_data.plain_language import TemplateTeacher
from radialog.instruct_data.synthetic_tasks import SyntheticStudy, SyntheticTaskWriter
from radialog.labeler import RuleBasedLabeler
from radialog.labels import CHEXPERT_LABELS
from radialog.synthetic import DRAWN_LABELS, SentenceBank, SyntheticConfig, generate_sample
from radialog.training.conversations import ConversationSample
from radialog.training.datasets import ConversationDataset

CONFIG = SyntheticConfig(sentences_per_finding=5)
JARGON = re.compile(r"pleural|effusion|pneumothorax|opacit|consolidation|cardiomegaly|airspace|infiltrate|catheter")
WORDING_TABLES = {
    "yes/no": tasks.YES_NO_QUESTIONS,
    "findings list": tasks.FINDINGS_LIST_QUESTIONS,
    "side": tasks.SIDE_QUESTIONS,
    "remove": tasks.REMOVE_REQUESTS,
    "add": tasks.ADD_REQUESTS,
    "explain": tasks.EXPLAIN_REQUESTS,
    "summary": tasks.SUMMARY_REQUESTS,
    **{f"lay {name}": table for name, table in tasks.LAY_QUESTIONS.items()},
    **{f"region {name}": table for name, table in tasks.REGION_WORDINGS.items()},
}


@pytest.fixture(scope="module")
def bank() -> SentenceBank:
    return SentenceBank.from_iu().restricted(5)


@pytest.fixture(scope="module")
def studies(bank) -> list[SyntheticStudy]:
    samples = (generate_sample(i, 7, CONFIG, bank) for i in range(150))
    return [SyntheticStudy.of(s, f"images/{s.id}.png") for s in samples]


@pytest.fixture(scope="module")
def samples(bank, studies) -> list[dict]:
    return SyntheticTaskWriter(bank).samples(studies, per_study=4, seed=0)


@pytest.fixture(scope="module")
def labeler() -> RuleBasedLabeler:
    return RuleBasedLabeler()


def positives(labeler: RuleBasedLabeler, text: str) -> set[str]:
    labels = labeler.label_report(text)
    return {name for name in DRAWN_LABELS if labels[name] == 1}


def asked_finding(question: str) -> str:
    """The finding a yes/no question is about, read back from the wording tables."""
    if match := re.fullmatch(r" Is there any (.+)\?", question):
        return match.group(1)
    for name, table in tasks.LAY_QUESTIONS.items():
        if question in table["train"] + table["eval"]:
            return name
    for name, names in tasks.FINDING_NAMES.items():
        for template in tasks.YES_NO_QUESTIONS["train"] + tasks.YES_NO_QUESTIONS["eval"]:
            if any(question == template.replace("<x>", n) for n in names):
                return name
    raise AssertionError(f"not a yes/no question: {question!r}")


def by_task(samples: list[dict], task: str) -> list[dict]:
    found = [s for s in samples if s["task"] == task]
    assert found, f"no {task} samples"
    return found


def test_every_task_is_written_and_the_trainer_reads_it(samples, tiny_model):
    assert {s["task"] for s in samples} == set(tasks.TASK_WEIGHTS)
    conversations = [ConversationSample(s["id"], s["messages"], 0) for s in samples[:40]]
    assert len(ConversationDataset(tiny_model, conversations, 600).items) == 40
    for sample in samples:  # follow-ups train their report turn unless it is not the image's report
        report = sample["messages"][1]
        assert report.get("train", True) == (sample["task"] != "CO+QA")


def test_yes_no_answers_follow_the_report_in_the_conversation(samples, labeler):
    checked = 0
    for sample in samples:
        messages = sample["messages"]
        for question, answer in zip(messages[2::2], messages[3::2], strict=True):
            if answer["content"].lower().rstrip(".") not in ("yes", "no"):
                continue
            name = asked_finding(question["content"])
            said = labeler.label_report(messages[1]["content"])[name] == 1
            assert answer["content"].lower().startswith("yes") == said, (question, answer, messages[1])
            checked += 1
    assert checked > 100


def test_corrections_change_the_named_finding_and_nothing_else(samples, labeler):
    for sample in by_task(samples, "CO"):
        _, report, instruction, corrected = sample["messages"]
        changed = positives(labeler, report["content"]) ^ positives(labeler, corrected["content"])
        assert len(changed) == 1, (instruction, report, corrected)
        name = changed.pop()
        names = [name.lower(), *tasks.FINDING_NAMES[name], *tasks.BARE_NAMES[name]]
        assert any(n in instruction["content"].lower() for n in names), (instruction, name)


def test_a_question_after_a_correction_follows_the_corrected_report(samples, labeler):
    for sample in by_task(samples, "CO+QA"):
        _, corrected, question, answer = sample["messages"]
        assert corrected["train"] is False  # the corrected report is not what the image shows
        if answer["content"].lower().rstrip(".") in ("yes", "no"):
            said = labeler.label_report(corrected["content"])[asked_finding(question["content"])] == 1
            assert answer["content"].lower().startswith("yes") == said


def test_region_answers_name_the_drawn_findings_and_side(bank, labeler):
    study = SyntheticStudy(
        id="s",
        image="images/s.png",
        report="",
        present=frozenset({"Pleural Effusion", "Consolidation", "Support Devices"}),
        sides={"Pleural Effusion": "right", "Consolidation": "left"},
        device_kind=1,
        statements={},
    )
    right = tasks.region_answer(study.present, study.sides, 1, "right lung")
    assert positives(labeler, right) == {"Pleural Effusion"} and "right" in right
    left = tasks.region_answer(study.present, study.sides, 1, "left lung")
    assert positives(labeler, left) == {"Consolidation"} and "left" in left
    assert positives(labeler, tasks.region_answer(study.present, study.sides, 1, "heart")) == set()
    assert "nasogastric" in tasks.region_answer(study.present, study.sides, 1, "devices")
    assert tasks.side_answer(study.present, study.sides, "Consolidation", "consolidation").endswith("the left.")
    assert tasks.side_answer(study.present, study.sides, "Pneumothorax", "pneumothorax") == "There is no pneumothorax."


def test_region_samples_use_the_side_the_image_was_drawn_on(samples, studies):
    by_id = {s.id: s for s in studies}
    side_questions = 0
    for sample in by_task(samples, "RQA"):
        study = by_id[sample["id"].split(":")[0]]
        question, answer = sample["messages"][2]["content"], sample["messages"][3]["content"]
        for name, bare in ((n, tasks.BARE_NAMES[n][0]) for n in study.sides):
            if bare in question and ("side" in question or "Where" in question):
                side_questions += 1
                side = study.sides[name]
                assert ("both sides" in answer) if side == "both" else answer.endswith(f"the {side}.")
    assert side_questions > 0


def test_plain_language_keeps_every_finding_without_jargon_at_grade_8(samples, labeler):
    for sample in by_task(samples, "EL"):
        report, answer = sample["messages"][1]["content"], sample["messages"][3]["content"]
        assert positives(labeler, answer) == positives(labeler, report), (report, answer)
        assert not JARGON.search(answer.lower()), answer
        assert textstat.flesch_kincaid_grade(answer) <= 8, answer


def test_summary_is_bullets_that_keep_every_finding(samples, labeler):
    for sample in by_task(samples, "SU"):
        report, answer = sample["messages"][1]["content"], sample["messages"][3]["content"]
        assert all(line.startswith("- ") for line in answer.splitlines()), answer
        assert positives(labeler, answer) == positives(labeler, report), (report, answer)


def test_template_teacher_on_a_real_style_report(labeler):
    report = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax. The osseous structures are intact."
    teacher = TemplateTeacher(labeler)
    plain = teacher.explain(report)
    assert plain == (
        "The heart looks bigger than normal. There is fluid around the left lung. The rest of the chest looks normal."
    )
    assert teacher.explain("Cardiomegaly.") == "The heart looks bigger than normal."  # nothing else was said
    assert positives(labeler, teacher.summarize(report)) == {"Cardiomegaly", "Pleural Effusion"}
    assert teacher.explain("No acute cardiopulmonary abnormality.").startswith("This chest X-ray looks normal.")


def test_evaluation_wordings_are_never_used_for_training(samples):
    trained = " ".join(m.get("content", "") for s in samples for m in s["messages"])
    for table_name, table in WORDING_TABLES.items():
        assert not set(table["train"]) & set(table["eval"]), table_name
        for wording in table["eval"]:
            fixed = max(wording.split("<x>"), key=len).strip()
            assert fixed not in trained, f"{table_name}: {wording!r} appears in training samples"


def test_eval_split_asks_in_eval_wordings(bank, studies):
    writer = SyntheticTaskWriter(bank, split="eval")
    rng = random.Random(0)
    questions = {writer.yes_no(study, rng)[0] for study in studies}
    eval_lay = {q for table in tasks.LAY_QUESTIONS.values() for q in table["eval"]}
    assert questions & eval_lay and not questions & {q for t in tasks.LAY_QUESTIONS.values() for q in t["train"]}
    assert all(asked_finding(q) in CHEXPERT_LABELS for q in questions)


def test_make_synthetic_writes_instruct_data_for_training_studies(tmp_path):
    out = tmp_path / "synth"
    argv = ["make-synthetic", "--out", str(out), "--count", "40", "--seed", "2", "--image-size", "64"]
    assert main([*argv, "--sentences-per-finding", "5", "--instruct-per-study", "2"]) == 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    training = {r["image"] for r in manifest if r["split"] == "train"}
    written = [json.loads(line) for line in (out / "instruct.jsonl").read_text().splitlines()]
    assert len(written) == 2 * len(training) and {s["image"] for s in written} == training


def test_task_weights_draw_only_the_named_tasks_in_their_shares(bank, studies):
    drawn = SyntheticTaskWriter(bank).samples(studies, per_study=4, seed=0, task_weights={"CO": 3.0, "EL": 1.0})
    counts = Counter(s["task"] for s in drawn)
    assert set(counts) == {"CO", "EL"} and 0.65 < counts["CO"] / len(drawn) < 0.85
    for bad in ({"XX": 1.0}, {"CO": -1.0, "EL": 2.0}, {"CO": 0.0}):
        with pytest.raises(ValueError):
            SyntheticTaskWriter(bank).samples(studies, per_study=1, seed=0, task_weights=bad)


def test_make_synthetic_writes_a_second_instruct_mix_beside_the_first(tmp_path):
    out = tmp_path / "synth"
    argv = ["make-synthetic", "--out", str(out), "--count", "40", "--seed", "2", "--image-size", "64"]
    argv += ["--sentences-per-finding", "5", "--instruct-per-study", "2"]
    assert main(argv) == 0
    focus = [*argv, "--instruct-name", "focus.jsonl", "--instruct-seed", "5", "--task-weights", "RQA=1,CO+QA=1"]
    assert main(focus) == 0
    first = [json.loads(line) for line in (out / "instruct.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (out / "focus.jsonl").read_text().splitlines()]
    assert len(second) == len(first) and {s["task"] for s in second} == {"RQA", "CO+QA"}
    assert {s["task"] for s in first} != {"RQA", "CO+QA"}
    for wrong in (["--task-weights", "RQA"], ["--task-weights", "XX=1"], ["--instruct-name", "../x.jsonl"]):
        assert main([*argv, *wrong]) == 2
