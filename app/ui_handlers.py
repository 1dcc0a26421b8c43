"""The Gradio UI's event handlers: plain functions of the study service and the components' values.

`radialog.app.ui` lays the page out and binds each handler to the service. A browser tab keeps only its
study's id in a `gr.State`; the study itself lives in the service's store, under the same caps and
expiry as the API's studies, so a tab left open holds no image and no model state of its own.
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from radialog.app.service import GenerationTimeout, StudyService, report_consistency
from radialog.app.studies import DatabaseUnavailable, StoreFull, StudyNotFound
from radialog.app.worker import ModelNotReady, ModelWorker, QueueFull
from radialog.chat import Session, Task
from radialog.consistency import ConsistencyResult, FindingCheck, Verdict
from radialog.engines.base import EngineError
from radialog.errors import RaDialogError
from radialog.export_formats import FORMATS, export_file
from radialog.imaging import load_xray
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
NO_FINDING_PICKED = "Pick a finding first."
NO_REPORT_TO_CHECK = '<p class="consistency-empty">No report to check yet.</p>'


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


def consistency_html(result: ConsistencyResult | None) -> str:
    """The consistency panel: each contradiction and omission with its report sentence and the classifier's
    probability, then how many findings agree. Report text is escaped: it is the model's or the user's."""
    if result is None:
        return NO_REPORT_TO_CHECK
    flags = [check for check in result.checks if check.verdict is not Verdict.AGREEMENT]
    agreeing = len(result.checks) - len(flags)
    summary = f"The report agrees with the classifier on {agreeing} of {len(result.checks)} findings."
    items = "".join(_flag_item(check) for check in flags)
    listed = f'<ul class="consistency-flags">{items}</ul>' if items else ""
    return f'<div class="consistency-panel">{listed}<p class="consistency-summary">{summary}</p></div>'


def _flag_item(check: FindingCheck) -> str:
    probability = "decision only" if check.probability is None else f"p = {check.probability:.3f}"
    classifier = "calls it present" if check.classifier_positive else "calls it absent"
    finding = html.escape(check.finding)
    if check.verdict is Verdict.OMISSION:
        said = "the report does not mention it"
    else:
        sentence = f" (“{html.escape(check.sentence)}”)" if check.sentence else ""
        said = f"the report says {check.report}{sentence}"
    return (
        f'<li class="{check.verdict}"><strong>{check.verdict.capitalize()}: {finding}</strong>: '
        f"{said}; the classifier {classifier} ({probability}).</li>"
    )


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
    service: StudyService,
    task: Task,
    text: str | None,
    drop: list[str] | None,
    extra: list[str] | None,
    study_id: str | None,
    chat: Chat,
) -> Iterator[tuple[Chat, Any, Any]]:
    """Stream one task's answer into the chat (chat, report, consistency panel); once the answer is complete
    the report box takes the current report and the panel checks it against the classifier."""
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
    session = running.session
    yield chat, session.report or "", consistency_html(report_consistency(session))


def on_finding_question(
    service: StudyService, finding: str | None, study_id: str | None, chat: Chat
) -> Iterator[tuple[Chat, Any, Any]]:
    """RaDialog's yes/no question about one finding ("Is there any Edema?"), streamed like `on_task`."""
    if not finding:
        raise gr.Error(NO_FINDING_PICKED)
    yield from on_task(service, Task.QUESTION, "", [], [finding], study_id, chat)


def on_heatmap(service: StudyService, finding: str | None, study_id: str | None) -> Image.Image:
    """Where on the image the classifier's evidence for `finding` lies, as an overlay on the film."""
    if study_id is None:
        raise gr.Error(NO_STUDY)
    if not finding:
        raise gr.Error(NO_FINDING_PICKED)
    try:
        png = service.heatmap(study_id, finding)
    except SERVICE_ERRORS as err:
        raise _ui_error(err) from err
    return Image.open(io.BytesIO(png))


def on_prior_upload(service: StudyService, path: str | None, study_id: str | None) -> tuple[Any, Any]:
    """A prior image of the same patient joins the tab's study: the prior as decoded, beside the current image,
    and the notice that says whether the model reads it. Clearing the box keeps the attached prior."""
    if path is None:
        return gr.update(), gr.update()
    if study_id is None:
        raise gr.Error(NO_STUDY)
    try:
        data = Path(path).read_bytes()
        session = service.attach_prior(study_id, data)
        prior = load_xray(data)  # for display: the study keeps only the uploaded bytes
    except SERVICE_ERRORS as err:
        raise _ui_error(err) from err
    return prior.to_pil(), session.prior.notice


def on_apply_edit(service: StudyService, text: str, study_id: str | None, chat: Chat) -> tuple[Chat, str, str]:
    """The edited report box becomes the report the conversation continues from, checked again."""
    if study_id is None:
        raise gr.Error(NO_STUDY)
    try:
        session = service.edit_report(study_id, text)
    except SERVICE_ERRORS as err:
        raise _ui_error(err) from err
    gr.Info("The edited report is now the one the conversation continues from.")
    edited = [*(chat or []), {"role": "user", "content": "(report edited)"}]
    return edited, session.report, consistency_html(report_consistency(session))


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
