"""The study service on the `tiny` model: uploads, the store, and tasks that hold the model while they stream."""

from __future__ import annotations

import gc

import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)

from radialog.app.service import StudyService, UploadTooLarge
from radialog.app.studies import StoreFull, StoreSettings, StudyNotFound, StudyStore
from radialog.app.worker import ModelWorker, QueueFull
from radialog.chat import Task
from radialog.errors import ImageLoadError, InputError
from radialog.labels import CHEXPERT_LABELS


def assert_model_free(worker: ModelWorker) -> None:
    with worker.admit():
        pass


def assert_model_held(worker: ModelWorker) -> None:
    with pytest.raises(QueueFull), worker.admit():
        pass


def test_a_new_study_is_stored_and_shows_the_image_the_model_read(service, xray_bytes):
    study = service.create_study(xray_bytes[0])
    assert service.get(study.session.id) is study.session and len(service.store) == 1
    assert study.xray.to_pil().mode == "L"
    assert set(study.session.probabilities) == set(CHEXPERT_LABELS)


def test_an_upload_over_the_limit_is_refused_before_decoding(worker, xray_bytes):
    service = StudyService(worker, StudyStore(), max_upload_bytes=len(xray_bytes[0]) - 1)
    with pytest.raises(UploadTooLarge, match="upload limit"):
        service.create_study(xray_bytes[0])
    assert len(service.store) == 0
    assert StudyService(worker, StudyStore(), max_upload_bytes=len(xray_bytes[0])).create_study(xray_bytes[0])


def test_a_bad_image_never_waits_for_the_model(service, worker):
    with worker.admit(), pytest.raises(ImageLoadError, match="not a readable image"):  # not QueueFull
        service.create_study(b"hello, this is not an image")


def test_a_full_store_refuses_new_studies_instead_of_evicting_one(worker, xray_bytes):
    service = StudyService(worker, StudyStore(StoreSettings(max_studies=1)))
    first = service.create_study(xray_bytes[0]).session.id
    with pytest.raises(StoreFull):
        service.create_study(xray_bytes[1])
    assert service.get(first).id == first


def test_a_task_holds_the_model_until_its_answer_is_drained(service, worker, xray_bytes):
    study_id = service.create_study(xray_bytes[0]).session.id
    running = service.start_task(study_id, Task.REPORT)
    assert running.user == "Generate report"
    assert_model_held(worker)  # admitted before the first piece
    first = next(running.pieces)
    assert_model_held(worker)  # and while it streams
    answer = (first + "".join(running.pieces)).strip()
    assert_model_free(worker)
    assert answer and running.session.report == answer


def test_a_stream_closed_early_is_cancelled_unrecorded_and_frees_the_model(service, worker, xray_bytes):
    study_id = service.create_study(xray_bytes[0]).session.id
    running = service.start_task(study_id, Task.REPORT)
    next(running.pieces)
    running.pieces.close()  # a client that went away
    assert_model_free(worker)
    assert running.session.report is None and running.session.transcript == [], "a truncated report is not kept"


def test_a_stream_dropped_unread_frees_the_model(service, worker, xray_bytes):
    session = service.create_study(xray_bytes[0]).session
    running = service.start_task(session.id, Task.REPORT)
    assert_model_held(worker)
    del running
    gc.collect()
    assert_model_free(worker)
    assert session.transcript == [], "nothing was generated"


def test_bad_input_is_refused_before_any_answer_and_frees_the_model(service, worker, xray_bytes):
    study_id = service.create_study(xray_bytes[0]).session.id
    with pytest.raises(InputError, match="generate one first"):
        service.start_task(study_id, Task.SUMMARIZE)
    assert_model_free(worker)


def test_a_busy_model_is_refused_when_the_task_starts(service, worker, xray_bytes):
    study_id = service.create_study(xray_bytes[0]).session.id
    with worker.admit(), pytest.raises(QueueFull):
        service.start_task(study_id, Task.REPORT)


def test_chat_correction_and_edit(service, xray_bytes):
    study_id = service.create_study(xray_bytes[0]).session.id
    service.start_task(study_id, Task.REPORT).answer()
    chat = service.start_task(study_id, Task.CHAT, "Is there any edema?")
    assert chat.user == "Is there any edema?" and chat.answer()
    corrected = service.start_task(study_id, Task.CORRECT, remove=["Edema"]).answer()
    assert service.get(study_id).report == corrected
    assert service.edit_report(study_id, " The lungs are clear. ").report == "The lungs are clear."


def test_export_record_needs_a_report_and_names_the_model_source(service, xray_bytes):
    study_id = service.create_study(xray_bytes[0]).session.id
    with pytest.raises(InputError, match="no report"):
        service.export_record(study_id)
    report = service.start_task(study_id, Task.REPORT).answer()
    record = service.export_record(study_id)
    assert record["report"] == report and record["model_id"] == "preset:tiny"
    assert record["image"] == {"format": "png", "window": None}


def test_unknown_and_deleted_studies(service, xray_bytes):
    with pytest.raises(StudyNotFound):
        service.start_task("nope", Task.REPORT)
    study_id = service.create_study(xray_bytes[0]).session.id
    service.delete(study_id)
    with pytest.raises(StudyNotFound):
        service.get(study_id)
