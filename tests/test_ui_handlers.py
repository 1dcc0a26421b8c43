"""The Gradio UI's handlers on the `tiny` model, called as Gradio calls them but without a browser."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import gradio as gr
import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from PIL import Image

from radialog.app.service import StudyService
from radialog.app.studies import StoreSettings, StudyNotFound, StudyStore
from radialog.app.ui_handlers import (
    NO_REPORT_TO_CHECK,
    consistency_html,
    on_apply_edit,
    on_export,
    on_finding_question,
    on_heatmap,
    on_prior_upload,
    on_task,
    on_upload,
)
from radialog.chat import Task
from radialog.consistency import ConsistencyResult, FindingCheck, Verdict
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import REGION_QUESTIONS, build_correction_prompt

# Sentences the rule-based labeler reads as denying a finding, for findings the tiny classifier may call present.
DENIALS = {
    "Pneumothorax": "There is no pneumothorax.",
    "Cardiomegaly": "There is no cardiomegaly.",
    "Pleural Effusion": "There is no pleural effusion.",
    "Edema": "There is no edema.",
}


@pytest.fixture
def xray_files(tmp_path, xray_bytes) -> list[str]:
    """The example X-rays where Gradio would leave an upload: a file path."""
    paths = [tmp_path / f"upload{i}.png" for i in range(len(xray_bytes))]
    for path, data in zip(paths, xray_bytes, strict=True):
        path.write_bytes(data)
    return [str(p) for p in paths]


def run(service: StudyService, task: Task, study_id: str | None, chat=None, text="", drop=(), extra=()) -> list:
    return list(on_task(service, task, text, list(drop), list(extra), study_id, chat or []))


def test_upload_shows_the_image_and_findings_and_stores_the_study(service, xray_files):
    study_id, image, rows, chat, report = on_upload(service, xray_files[0], None)
    assert service.get(study_id).id == study_id
    assert isinstance(image, Image.Image) and image.mode == "L"
    assert sorted(row[0] for row in rows) == sorted(CHEXPERT_LABELS) and chat == [] and report == ""


def test_a_new_upload_or_clearing_it_forgets_the_tabs_previous_study(service, xray_files):
    first = on_upload(service, xray_files[0], None)[0]
    second = on_upload(service, xray_files[1], first)[0]
    assert len(service.store) == 1 and service.get(second)
    with pytest.raises(StudyNotFound):
        service.get(first)
    assert on_upload(service, None, second)[:2] == (None, None)
    assert len(service.store) == 0


def test_ui_studies_count_against_the_stores_caps(worker, xray_files):
    service = StudyService(worker, StudyStore(StoreSettings(max_studies=1)))
    first_tab = on_upload(service, xray_files[0], None)[0]
    with pytest.raises(gr.Error, match="study store is full"):
        on_upload(service, xray_files[1], None)  # another tab
    assert service.get(first_tab), "the first tab's study is kept"


def test_bad_uploads_show_an_error_and_store_nothing(worker, xray_files, tmp_path):
    service = StudyService(worker, StudyStore(), max_upload_bytes=1000)
    with pytest.raises(gr.Error, match="upload limit"):
        on_upload(service, xray_files[0], None)
    text = tmp_path / "notes.png"
    text.write_text("hello, this is not an image")
    with pytest.raises(gr.Error, match="not a readable image"):
        on_upload(service, str(text), None)
    assert len(service.store) == 0


def test_a_report_streams_into_the_chat_then_fills_the_report_box(service, xray_files):
    study_id = on_upload(service, xray_files[0], None)[0]
    updates = run(service, Task.REPORT, study_id, chat=[{"role": "user", "content": "earlier"}])
    answers = [chat[-1]["content"] for chat, _, _ in updates]
    assert len(updates) >= 3, "pieces, then the final update"
    assert all(b.startswith(a) for a, b in itertools.pairwise(answers)), "the answer only grows"
    chat, report, consistency = updates[-1]
    assert chat[0]["content"] == "earlier" and chat[1] == {"role": "user", "content": "Generate report"}
    assert report == service.get(study_id).report == chat[-1]["content"].strip()
    assert "consistency-summary" in consistency, "the finished report is checked"
    assert all(box == gr.update() for _, box, _ in updates[:-1]), "the report box waits for the whole answer"
    assert all(panel == gr.update() for _, _, panel in updates[:-1]), "so does the consistency panel"


def test_tasks_need_a_study_and_valid_input(service, worker, xray_files):
    with pytest.raises(gr.Error, match="Upload an X-ray first"):
        run(service, Task.REPORT, None)
    study_id = on_upload(service, xray_files[0], None)[0]
    with pytest.raises(gr.Error, match="generate one first"):
        run(service, Task.SUMMARIZE, study_id)
    with worker.admit(), pytest.raises(gr.Error, match="busy"):
        run(service, Task.REPORT, study_id)
    assert service.get(study_id).transcript == []


def test_chat_and_correction(service, xray_files):
    study_id = on_upload(service, xray_files[0], None)[0]
    chat = run(service, Task.REPORT, study_id)[-1][0]
    chat = run(service, Task.CHAT, study_id, chat, text="Is there any edema?")[-1][0]
    assert chat[-2] == {"role": "user", "content": "Is there any edema?"}
    _, report, _ = run(service, Task.CORRECT, study_id, chat, drop=["Edema"])[-1]
    assert report == service.get(study_id).report
    assert [t.task for t in service.get(study_id).transcript] == [Task.REPORT, Task.CHAT, Task.CORRECT]


def test_an_edited_report_is_the_one_exported(service, xray_files):
    study_id = on_upload(service, xray_files[0], None)[0]
    with pytest.raises(gr.Error, match="no report"):
        on_export(service, study_id)
    chat = run(service, Task.REPORT, study_id)[-1][0]
    chat, report, _ = on_apply_edit(service, "  The lungs are clear.  ", study_id, chat)
    assert report == "The lungs are clear." and chat[-1] == {"role": "user", "content": "(report edited)"}
    with pytest.raises(gr.Error, match="empty"):
        on_apply_edit(service, "   ", study_id, chat)
    files = {Path(p).name.split(".", 1)[1]: Path(p) for p in on_export(service, study_id)}
    assert set(files) == {"txt", "json", "fhir.json", "dcm"}
    text_file, json_file = files["txt"], files["json"]
    record = json.loads(json_file.read_text())
    assert record["report"] == "The lungs are clear." and record["model_id"] == "preset:tiny"
    assert "The lungs are clear." in text_file.read_text() and study_id[:8] in text_file.name


def test_a_finding_question_asks_radialogs_yes_no_question(service, xray_files):
    with pytest.raises(gr.Error, match="Upload an X-ray first"):
        list(on_finding_question(service, "Edema", None, []))
    study_id = on_upload(service, xray_files[0], None)[0]
    with pytest.raises(gr.Error, match="Pick a finding"):
        list(on_finding_question(service, None, study_id, []))
    chat, report, consistency = list(on_finding_question(service, "Edema", study_id, []))[-1]
    assert chat[0] == {"role": "user", "content": "Is there any Edema?"} and chat[1]["role"] == "assistant"
    turn = service.get(study_id).transcript[-1]
    assert turn.task is Task.QUESTION and turn.user == "Is there any Edema?"
    assert report == "" and consistency == NO_REPORT_TO_CHECK, "no report yet: nothing to check"


def test_a_region_question_is_asked_as_written(service, xray_files):
    study_id = on_upload(service, xray_files[0], None)[0]
    chat = run(service, Task.QUESTION, study_id, text=REGION_QUESTIONS[4])[-1][0]
    assert chat[0] == {"role": "user", "content": REGION_QUESTIONS[4]}
    assert service.get(study_id).transcript[-1].task is Task.QUESTION


def test_ticked_and_free_text_corrections_rewrite_the_report(service, xray_files):
    study_id = on_upload(service, xray_files[0], None)[0]
    chat = run(service, Task.REPORT, study_id)[-1][0]
    with pytest.raises(gr.Error, match="needs findings to add or remove"):
        run(service, Task.CORRECT, study_id, chat)
    chat, report, _ = run(service, Task.CORRECT, study_id, chat, drop=["Edema"], extra=["Fracture"])[-1]
    wording = build_correction_prompt(remove=["Edema"], add=["Fracture"])
    assert chat[-2] == {"role": "user", "content": wording} and report == service.get(study_id).report
    chat, report, _ = run(service, Task.CORRECT, study_id, chat, text="I disagree, there is no effusion")[-1]
    assert chat[-2] == {"role": "user", "content": "I disagree, there is no effusion"}
    transcript = service.get(study_id).transcript
    assert [t.task for t in transcript] == [Task.REPORT, Task.CORRECT, Task.CORRECT]
    assert report == service.get(study_id).report == transcript[-1].answer


def test_an_edit_that_denies_a_predicted_finding_is_flagged(service, xray_files):
    study_id = on_upload(service, xray_files[0], None)[0]
    session = service.get(study_id)
    denied = next(finding for finding in DENIALS if finding in session.positive)
    chat = run(service, Task.REPORT, study_id)[-1][0]
    _, _, panel = on_apply_edit(service, f"The heart is normal. {DENIALS[denied]} <b>Bold</b>", study_id, chat)
    flagged = service.consistency(study_id)
    assert denied in {c.finding for c in flagged.contradictions}
    assert f'<li class="contradiction"><strong>Contradiction: {denied}</strong>' in panel
    assert DENIALS[denied].rstrip(".") in panel and f"p = {session.probabilities[denied]:.3f}" in panel
    assert panel.count('class="omission"') == len(flagged.omissions)
    agreeing = len(flagged.checks) - len(flagged.contradictions) - len(flagged.omissions)
    assert f"agrees with the classifier on {agreeing} of {len(flagged.checks)} findings" in panel
    assert "<b>" not in panel, "report text is escaped"


def test_the_consistency_panel_names_sentence_and_probability():
    checks = (
        FindingCheck("Edema", Verdict.CONTRADICTION, "positive", False, 0.05, "Mild edema."),
        FindingCheck("Fracture", Verdict.OMISSION, "not mentioned", True, None, None),
        FindingCheck("Cardiomegaly", Verdict.AGREEMENT, "positive", True, 0.9, "The heart is enlarged."),
    )
    panel = consistency_html(ConsistencyResult(checks))
    assert "Contradiction: Edema</strong>: the report says positive (“Mild edema.”)" in panel
    assert "the classifier calls it absent (p = 0.050)" in panel
    assert "Omission: Fracture</strong>: the report does not mention it; the classifier calls it present" in panel
    assert "(decision only)" in panel and "Cardiomegaly" not in panel
    assert "agrees with the classifier on 1 of 3 findings" in panel
    assert "consistency-flags" not in consistency_html(ConsistencyResult(checks[2:]))
    assert consistency_html(None) == NO_REPORT_TO_CHECK


def test_a_prior_is_attached_shown_and_explained(service, xray_files, tmp_path):
    with pytest.raises(gr.Error, match="Upload an X-ray first"):
        on_prior_upload(service, xray_files[1], None)
    study_id = on_upload(service, xray_files[0], None)[0]
    bad = tmp_path / "prior.png"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="not a readable image"):
        on_prior_upload(service, str(bad), study_id)
    assert service.get(study_id).prior is None
    image, notice = on_prior_upload(service, xray_files[1], study_id)
    prior = service.get(study_id).prior
    assert isinstance(image, Image.Image) and image.mode == "L"
    assert prior is not None and notice == prior.notice and notice
    assert service.prior_image(study_id) == Path(xray_files[1]).read_bytes()
    assert on_prior_upload(service, None, study_id) == (gr.update(), gr.update()), "clearing the box keeps it"
    assert service.get(study_id).prior == prior


def test_a_heatmap_is_an_image_of_the_film(service, xray_files):
    with pytest.raises(gr.Error, match="Upload an X-ray first"):
        on_heatmap(service, "Edema", None)
    study_id = on_upload(service, xray_files[0], None)[0]
    with pytest.raises(gr.Error, match="Pick a finding"):
        on_heatmap(service, None, study_id)
    image = on_heatmap(service, "Pneumothorax", study_id)
    assert isinstance(image, Image.Image) and image.format == "PNG"
    assert image.size == Image.open(xray_files[0]).size, "the overlay covers the film as uploaded"
