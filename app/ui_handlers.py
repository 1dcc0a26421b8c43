"""The Gradio UI's event handlers: plain functions of the study service and the components' values.

`radialog.app.ui` lays the page out and binds each handler to the service. A browser tab keeps only its
study's id in a `gr.State`; the study itself lives in the service's store, under the same caps and
expiry as the API's studies, so a tab left open holds no image and no model state of its own.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from radialog.app.service import GenerationTimeout, StudyService
from radialog.app.studies import DatabaseUnavailable, StoreFull, StudyNotFound
from radialog.app.worker import ModelNotReady, ModelWorker, QueueFull
from radialog.chat import Session, Task
from radialog.engines.base import EngineError
from radialog.errors import RaDialogError
from radialog.export_formats import FORMATS, export_file
from radialog.labels import CHEXPERT_LABELS
from radialog.memory import OutOfMemory

Chat = list[dict[str, str]]
Rows = list[list[Any]]

# What the service raises for a user to act on; anything else is a bug and Gradio shows its generic error.
SERVICE_ERRORS = (
    RaDialogError,
    StudyNotFound,
    StoreFull,
    DatabaseUnavailable,
    ModelNotReady,
    QueueFull,
    EngineError,
    OutOfMemory,
    GenerationTimeout,
)
NO_STUDY = "Upload an X-ray first."


def banner_text(worker: ModelWorker) -> str:
    # Which model answers (RaDialog, R2GenGPT, ...) once it is loaded, and where its weights came from.
    source = f"{worker.model_name}, {worker.model_id}" if worker.model_name else worker.model_id
    if worker.is_demo:
        return (
            f"**Demo weights ({source}): not for clinical use.** This model never learnt from real "
            "radiographs (the embedded demo was trained on synthetic drawings; presets are untrained): "
            "its findings and reports for a real X-ray mean nothing."
        )
    return f"**Research prototype ({source}): not for clinical use.** Every report is a draft to verify."


def findings_table(session: Session | None) -> Rows:
    """All 14 labels, most probable first; labels the classifier cannot predict last, as n/a."""
    if session is None:
        return [[label, "", ""] for label in CHEXPERT_LABELS]
    rows = sorted(
        session.probabilities.items(), key=lambda item: -1.0 if math.isnan(item[1]) else item[1], reverse=True
    )
    return [
        [label, "n/a" if math.isnan(p) else f"{p:.3f}", "yes" if label in session.positive else ""] for label, p in rows
    ]


def on_upload(
    service: StudyService, path: str | None, study_id: str | None
) -> tuple[str | None, Image.Image | None, Rows, Chat, str]:
    """A new (or cleared) upload: the tab's study id, the image as the model reads it, the findings, and
    an empty conversation and report."""
    study = None
    if path is not None:
        try:
            study = service.create_study(Path(path).read_bytes())
        except SERVICE_ERRORS as err:
            raise _ui_error(err) from err
    # One study per tab: the one this upload replaces would otherwise take a place in the store until it expires.
    if study_id is not None:
        with contextlib.suppress(StudyNotFound):  # expired or deleted already
            service.delete(study_id)
    if study is None:
        return None, None, findings_table(None), [], ""
    # The 8-bit image the model reads: for DICOM, with the file's VOI window applied.
    return study.session.id, study.xray.to_pil(), findings_table(study.session), [], ""


def on_task(
    service: StudyService, task: Task, text: str, drop: list[str], extra: list[str], study_id: str | None, chat: Chat
) -> Iterator[tuple[Chat, Any, Any]]:
    """Stream one task's answer into the chat (chat, report, message box); the report box takes the
    current report and the message box empties once the answer is complete."""
    if study_id is None:
        raise gr.Error(NO_STUDY)
    try:
        running = service.start_task(study_id, task, text, remove=drop or (), add=extra or ())
        chat = [*(chat or []), {"role": "user", "content": running.user}, {"role": "assistant", "content": ""}]
        answer = ""
        for piece in running.pieces:
            answer += piece
            chat[-1] = {"role": "assistant", "content": answer}
            yield chat, gr.update(), gr.update()
    except SERVICE_ERRORS as err:
        raise _ui_error(err) from err
    yield chat, running.session.report or "", ""


def on_apply_edit(service: StudyService, text: str, study_id: str | None, chat: Chat) -> tuple[Chat, str]:
    """The edited report box becomes the report the conversation continues from."""
    if study_id is None:
        raise gr.Error(NO_STUDY)
    try:
        session = service.edit_report(study_id, text)
    except SERVICE_ERRORS as err:
        raise _ui_error(err) from err
    gr.Info("The edited report is now the one the conversation continues from.")
    return [*(chat or []), {"role": "user", "content": "(report edited)"}], session.report


def on_export(service: StudyService, study_id: str | None) -> list[str]:
    if study_id is None:
        raise gr.Error(NO_STUDY)
    try:
        record = service.export_record(study_id)
    except SERVICE_ERRORS as err:
        raise _ui_error(err) from err
    return export_files(record)


def export_files(record: dict) -> list[str]:
    """The report in every export format (text, JSON, FHIR, DICOM SR), written only now that the user asked."""
    folder = Path(tempfile.mkdtemp(prefix="radialog-export-"))
    paths = []
    for fmt in FORMATS:
        exported = export_file(record, fmt)
        path = folder / exported.filename
        path.write_bytes(exported.content)
        paths.append(str(path))
    return paths


def _ui_error(err: Exception) -> gr.Error:
    if isinstance(err, QueueFull):
        return gr.Error(f"The server is busy ({err}). Please try again in a moment.")
    if isinstance(err, StudyNotFound):
        return gr.Error("The server no longer keeps this study (it expired or was deleted): upload the X-ray again.")
    return gr.Error(str(err))
