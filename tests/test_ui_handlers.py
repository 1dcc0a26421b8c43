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
from radialog.app.ui_handlers import on_apply_edit, on_export, on_task, on_upload
from radialog.chat import Task
from radialog.labels import CHEXPERT_LABELS


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
    chat, report, message = updates[-1]
    assert chat[0]["content"] == "earlier" and chat[1] == {"role": "user", "content": "Generate report"}
    assert report == service.get(study_id).report == chat[-1]["content"].strip() and message == ""
    assert all(box == gr.update() for _, box, _ in updates[:-1]), "the report box waits for the whole answer"


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
    chat, report = on_apply_edit(service, "  The lungs are clear.  ", study_id, chat)
    assert report == "The lungs are clear." and chat[-1] == {"role": "user", "content": "(report edited)"}
    with pytest.raises(gr.Error, match="empty"):
        on_apply_edit(service, "   ", study_id, chat)
    files = {Path(p).name.split(".", 1)[1]: Path(p) for p in on_export(service, study_id)}
    assert set(files) == {"txt", "json", "fhir.json", "dcm"}
    text_file, json_file = files["txt"], files["json"]
    record = json.loads(json_file.read_text())
    assert record["report"] == "The lungs are clear." and record["model_id"] == "preset:tiny"
    assert "The lungs are clear." in text_file.read_text() and study_id[:8] in text_file.name
