"""The Gradio UI: upload an X-ray, read the findings, stream a report, correct it and chat about it.

Each browser tab has its own `radialog.chat.Session` in a `gr.State` (expired after an hour without
use); nothing is shared between users but the model, which the worker admits one job at a time.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from app.worker import ModelNotReady, ModelWorker, QueueFull
from radialog.chat import Session, Task
from radialog.errors import RaDialogError
from radialog.imaging import load_xray
from radialog.labels import CHEXPERT_LABELS

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
SESSION_TTL_S = 3600
# System fonts only: Gradio's default theme would fetch Google Fonts from a CDN.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = ".radialog-banner {padding: 0.6em 1em; border-radius: 6px; background: #fff3cd; border: 1px solid #e0b100;}"

Chat = list[dict[str, str]]


def example_label(path: Path) -> str:
    """`synthetic_pneumothorax_device.png` → "synthetic: pneumothorax device"; real films by dataset and name."""
    kind, _, findings = path.stem.partition("_")
    if kind == "synthetic":
        return f"synthetic: {findings.replace('_', ' ')}"
    return f"NIH ChestX-ray14 {path.stem}"


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


def findings_table(session: Session | None) -> list[list[Any]]:
    """All 14 labels, most probable first; labels the classifier cannot predict last, as n/a."""
    if session is None:
        return [[label, "", ""] for label in CHEXPERT_LABELS]
    rows = sorted(session.findings.items(), key=lambda item: -1.0 if math.isnan(item[1]) else item[1], reverse=True)
    return [
        [label, "n/a" if math.isnan(p) else f"{p:.3f}", "yes" if label in session.positive else ""] for label, p in rows
    ]


def _ui_error(err: Exception) -> gr.Error:
    if isinstance(err, QueueFull):
        return gr.Error(f"The server is busy ({err}). Please try again in a moment.")
    return gr.Error(str(err))


def build_ui(worker: ModelWorker) -> gr.Blocks:
    with gr.Blocks(title="RaDialog") as blocks:
        session_state = gr.State(None, time_to_live=SESSION_TTL_S)
        gr.Markdown("# RaDialog: chest X-ray report assistant")
        banner = gr.Markdown(banner_text(worker), elem_classes="radialog-banner", elem_id="banner")
        blocks.load(lambda: banner_text(worker), None, banner)  # the model may have loaded since start-up
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES, elem_id="upload")
                image = gr.Image(
                    label="Image as the model sees it", interactive=False, height=360, type="pil", elem_id="xray"
                )
                findings = gr.Dataframe(
                    value=findings_table(None),
                    headers=["Finding", "Probability", "Predicted"],
                    label="Predicted findings",
                    interactive=False,
                    max_height=640,  # all 14 rows without scrolling
                    elem_id="findings",
                )
                examples = sorted(EXAMPLES_DIR.glob("*.png"))
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", height=420, elem_id="chatbot")
                with gr.Row():
                    message = gr.Textbox(
                        placeholder="Ask about the image or the report…", show_label=False, scale=5, elem_id="message"
                    )
                    send = gr.Button("Send", scale=1, elem_id="send")
                with gr.Row():
                    generate = gr.Button("Generate report", variant="primary", elem_id="generate")
                    plain = gr.Button("Plain language", elem_id="plain")
                    summarize = gr.Button("Summarize", elem_id="summarize")
                with gr.Accordion("Correct the report", open=False):
                    with gr.Row():
                        remove = gr.Dropdown(list(CHEXPERT_LABELS), multiselect=True, label="Patient does not have")
                        add = gr.Dropdown(list(CHEXPERT_LABELS), multiselect=True, label="Patient also has")
                    correct = gr.Button("Correct…", elem_id="correct")
                report = gr.Textbox(label="Report (editable)", lines=7, interactive=True, elem_id="report")
                with gr.Row():
                    apply_edit = gr.Button("Use my edits", elem_id="apply-edit")
                    export = gr.Button("Export report", elem_id="export")
                exported = gr.File(label="Exported report", file_count="multiple", interactive=False)

        def on_upload(path: str | None) -> tuple:
            if path is None:
                return None, None, findings_table(None), [], ""
            try:
                xray = load_xray(Path(path))
                with worker.slot():
                    session = Session.start(worker.model, xray)
            except (RaDialogError, ModelNotReady, QueueFull) as err:
                raise _ui_error(err) from err
            logger.info("ui session %s: %s image", session.id, xray.source_format)
            # The 8-bit image the model reads: for DICOM, with the file's VOI window applied.
            return session, xray.to_pil(), findings_table(session), [], ""

        upload.change(on_upload, [upload], [session_state, image, findings, chatbot, report], concurrency_limit=None)
        if examples:
            gr.Examples(
                [[str(p)] for p in examples],
                inputs=[upload],
                label="Examples: NIH ChestX-ray14 films, and synthetic drawings like the demo model's training images",
                example_labels=[example_label(p) for p in examples],
            )

        def run_task(task: Task, text: str, drop: list[str], extra: list[str], session: Session | None, chat: Chat):
            if session is None:
                raise gr.Error("Upload an X-ray first.")
            chat = list(chat or [])
            try:
                with worker.slot():
                    pending = session.prepare(task, text, remove=drop or (), add=extra or ())
                    chat += [{"role": "user", "content": pending.user}, {"role": "assistant", "content": ""}]
                    answer = ""
                    for piece in session.run(pending):
                        answer += piece
                        chat[-1] = {"role": "assistant", "content": answer}
                        yield chat, gr.update(), gr.update()
            except (RaDialogError, ModelNotReady, QueueFull) as err:
                raise _ui_error(err) from err
            yield chat, session.report or "", ""

        def task_handler(task: Task):
            def handler(text: str, drop: list[str], extra: list[str], session: Session | None, chat: Chat) -> Iterator:
                yield from run_task(task, text, drop, extra, session, chat)

            return handler

        inputs = [message, remove, add, session_state, chatbot]
        outputs = [chatbot, report, message]
        for trigger, task in [
            (generate.click, Task.REPORT),
            (plain.click, Task.PLAIN_LANGUAGE),
            (summarize.click, Task.SUMMARIZE),
            (correct.click, Task.CORRECT),
            (send.click, Task.CHAT),
            (message.submit, Task.CHAT),
        ]:
            trigger(task_handler(task), inputs, outputs)

        def on_apply_edit(text: str, session: Session | None, chat: Chat) -> tuple[Chat, str]:
            if session is None:
                raise gr.Error("Upload an X-ray first.")
            try:
                session.set_report(text)
            except RaDialogError as err:
                raise _ui_error(err) from err
            gr.Info("The edited report is now the one the conversation continues from.")
            return [*(chat or []), {"role": "user", "content": "(report edited)"}], session.report

        apply_edit.click(on_apply_edit, [report, session_state, chatbot], [chatbot, report])

        def on_export(session: Session | None) -> list[str]:
            if session is None or session.report is None:
                raise gr.Error("There is no report to export yet.")
            return export_files(session, worker.model_id)

        export.click(on_export, [session_state], [exported])
    return blocks


def export_files(session: Session, model_id: str) -> list[str]:
    """The report as plain text and as a JSON record, written only now that the user asked for them."""
    record = session.record(model_id)
    folder = Path(tempfile.mkdtemp(prefix="radialog-export-"))
    stem = f"radialog-report-{session.id[:8]}"
    text_path, json_path = folder / f"{stem}.txt", folder / f"{stem}.json"
    positive = ", ".join(record["positive_findings"]) or "none"
    text_path.write_text(
        f"RaDialog draft report (not for clinical use)\nModel: {model_id}\nExported: {record['exported_at']}\n"
        f"Predicted findings: {positive}\n\nFindings:\n{record['report']}\n",
        encoding="utf-8",
    )
    json_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return [str(text_path), str(json_path)]
