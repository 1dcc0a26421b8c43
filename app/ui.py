"""The Gradio UI's layout: upload an X-ray, read the findings, stream a report, correct it and chat about it.

This module only places the components and wires their events to the handlers of
`radialog.app.ui_handlers`, each bound to a `StudyService` on the API's worker and store. Nothing is
shared between users but the model, which the worker admits one job at a time.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from radialog.app.audit import log_access
from radialog.app.service import StudyService
from radialog.app.ui_handlers import (
    Chat,
    banner_text,
    findings_table,
    on_apply_edit,
    on_export,
    on_task,
    on_upload,
)
from radialog.chat import Task
from radialog.labels import CHEXPERT_LABELS

EXAMPLES_DIR = Path(__file__).parent / "examples"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
# System fonts only: Gradio's default theme would fetch Google Fonts from a CDN.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = ".radialog-banner {padding: 0.6em 1em; border-radius: 6px; background: #fff3cd; border: 1px solid #e0b100;}"


def ui_client(request: gr.Request | None) -> str:
    """Who, for the audit log: the browser's host, marked as the UI."""
    host = request.client.host if request is not None and request.client else "unknown"
    return f"{host} ui"


def task_handler(service: StudyService, task: Task):
    """One task button's event handler. A plain function, not a `partial`: Gradio hands the request only to
    parameters it can see annotated as `gr.Request`."""

    def run_task(text: str, drop: list[str], extra: list[str], study_id: str | None, chat: Chat, request: gr.Request):
        log_access(ui_client(request), study_id, f"ui {task}")
        yield from on_task(service, task, text, drop, extra, study_id, chat)

    return run_task


def example_label(path: Path) -> str:
    """`synthetic_pneumothorax_device.png` → "synthetic: pneumothorax device"; real films by dataset and name."""
    kind, _, findings = path.stem.partition("_")
    if kind == "synthetic":
        return f"synthetic: {findings.replace('_', ' ')}"
    return f"NIH ChestX-ray14 {path.stem}"


def build_ui(service: StudyService) -> gr.Blocks:
    """The page; every event goes to a handler of `radialog.app.ui_handlers` bound to `service`."""
    worker = service.worker
    with gr.Blocks(title="RaDialog") as blocks:
        # The tab's study id: the study lives in the service's store, which caps and expires it.
        study = gr.State(None)
        gr.Markdown("# RaDialog: chest X-ray report assistant")
        banner = gr.Markdown(banner_text(worker), elem_classes="radialog-banner", elem_id="banner")
        # The model may have loaded since start-up.
        blocks.load(partial(banner_text, worker), None, banner, api_name="banner")
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

        def upload_study(path: str | None, study_id: str | None, request: gr.Request):
            result = on_upload(service, path, study_id)
            if study_id is not None:
                log_access(ui_client(request), study_id, "ui replaced")
            if result[0] is not None:
                log_access(ui_client(request), result[0], "ui created")
            return result

        upload.change(
            upload_study,
            [upload, study],
            [study, image, findings, chatbot, report],
            api_name="upload",
            concurrency_limit=None,  # the worker's queue bounds the model's jobs
        )
        if examples:
            gr.Examples(
                [[str(p)] for p in examples],
                inputs=[upload],
                label="Examples: NIH ChestX-ray14 films, and synthetic drawings like the demo model's training images",
                example_labels=[example_label(p) for p in examples],
            )

        inputs = [message, remove, add, study, chatbot]
        outputs = [chatbot, report, message]
        for trigger, task in [
            (generate.click, Task.REPORT),
            (plain.click, Task.PLAIN_LANGUAGE),
            (summarize.click, Task.SUMMARIZE),
            (correct.click, Task.CORRECT),
            (send.click, Task.CHAT),
            (message.submit, Task.CHAT),
        ]:
            trigger(task_handler(service, task), inputs, outputs, api_name=str(task))

        def apply_user_edit(text: str, study_id: str | None, chat: Chat, request: gr.Request):
            log_access(ui_client(request), study_id, "ui edit")
            return on_apply_edit(service, text, study_id, chat)

        def export_study(study_id: str | None, request: gr.Request):
            log_access(ui_client(request), study_id, "ui export")
            return on_export(service, study_id)

        apply_edit.click(apply_user_edit, [report, study, chatbot], [chatbot, report], api_name="edit")
        export.click(export_study, [study], [exported], api_name="export")
    return blocks
