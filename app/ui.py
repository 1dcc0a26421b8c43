"""The Gradio UI's layout: upload an X-ray (and a prior), read the findings and their heatmaps, stream a
report, check it against the classifier, correct it and ask about it.

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
    NO_REPORT_TO_CHECK,
    Chat,
    banner_text,
    findings_table,
    on_apply_edit,
    on_export,
    on_finding_question,
    on_heatmap,
    on_prior_upload,
    on_task,
    on_upload,
)
from radialog.chat import Task
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import REGION_QUESTIONS

EXAMPLES_DIR = Path(__file__).parent / "examples"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
# System fonts only: Gradio's default theme would fetch Google Fonts from a CDN.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
.radialog-banner {padding: 0.6em 1em; border-radius: 6px; background: #fff3cd; border: 1px solid #e0b100;}
#consistency .contradiction {color: #b00020;}
#consistency .omission {color: #8a5a00;}
"""


def ui_client(request: gr.Request | None) -> str:
    """Who, for the audit log: the browser's host, marked as the UI."""
    host = request.client.host if request is not None and request.client else "unknown"
    return f"{host} ui"


def task_handler(service: StudyService, task: Task):
    """The event handler of a task that takes one text (a message, a question, a correction in words). A plain
    function, not a `partial`: Gradio hands the request only to parameters it can see annotated as `gr.Request`."""

    def run_task(text: str | None, study_id: str | None, chat: Chat, request: gr.Request):
        log_access(ui_client(request), study_id, f"ui {task}")
        yield from on_task(service, task, text, [], [], study_id, chat)

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
    labels = list(CHEXPERT_LABELS)
    with gr.Blocks(title="RaDialog") as blocks:
        # The tab's study id: the study lives in the service's store, which caps and expires it.
        study = gr.State(None)
        no_text = gr.State("")  # the text of tasks that take none (report, plain language, summary)
        gr.Markdown("# RaDialog: chest X-ray report assistant")
        banner = gr.Markdown(banner_text(worker), elem_classes="radialog-banner", elem_id="banner")
        # The model may have loaded since start-up.
        blocks.load(partial(banner_text, worker), None, banner, api_name="banner")
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES, elem_id="upload")
                prior_upload = gr.File(
                    label="Prior image (same patient)", file_types=UPLOAD_TYPES, elem_id="prior-upload"
                )
                with gr.Row():
                    image = gr.Image(
                        label="Image as the model sees it", interactive=False, height=360, type="pil", elem_id="xray"
                    )
                    prior_image = gr.Image(
                        label="Prior image", interactive=False, height=360, type="pil", elem_id="prior"
                    )
                prior_notice = gr.Markdown(elem_id="prior-notice")
                findings = gr.Dataframe(
                    value=findings_table(None),
                    headers=["Finding", "Probability", "Predicted"],
                    label="Predicted findings",
                    interactive=False,
                    max_height=640,  # all 14 rows without scrolling
                    elem_id="findings",
                )
                with gr.Row():
                    heatmap_finding = gr.Dropdown(
                        labels, label="Heatmap of finding", scale=3, elem_id="heatmap-finding"
                    )
                    show_heatmap = gr.Button("Show heatmap", scale=1, elem_id="show-heatmap")
                heatmap = gr.Image(
                    label="Where the classifier sees the finding", interactive=False, type="pil", elem_id="heatmap"
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
                    finding_question = gr.Dropdown(labels, label="Is there any…", scale=3, elem_id="finding-question")
                    ask_finding = gr.Button("Ask", scale=1, elem_id="ask-finding")
                    region_question = gr.Dropdown(
                        list(REGION_QUESTIONS),
                        value=REGION_QUESTIONS[0],
                        label="Region question",
                        scale=3,
                        elem_id="region-question",
                    )
                    ask_region = gr.Button("Ask", scale=1, elem_id="ask-region")
                with gr.Row():
                    generate = gr.Button("Generate report", variant="primary", elem_id="generate")
                    plain = gr.Button("Plain language", elem_id="plain")
                    summarize = gr.Button("Summarize", elem_id="summarize")
                with gr.Accordion("Correct the report", open=False, elem_id="correct-accordion"):
                    with gr.Row():
                        remove = gr.CheckboxGroup(labels, label="Patient does not have", elem_id="correct-remove")
                        add = gr.CheckboxGroup(labels, label="Patient also has", elem_id="correct-add")
                    correct = gr.Button("Correct…", elem_id="correct")
                    with gr.Row():
                        correction = gr.Textbox(
                            placeholder="I disagree, there is no effusion",
                            label="Correction in your words",
                            scale=5,
                            elem_id="correction",
                        )
                        correct_text = gr.Button("Send correction", scale=1, elem_id="correct-text")
                report = gr.Textbox(label="Report (editable)", lines=7, interactive=True, elem_id="report")
                gr.Markdown("**The report against the findings classifier**")
                consistency = gr.HTML(NO_REPORT_TO_CHECK, elem_id="consistency")
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
            # The new study has no report, prior or heatmap yet.
            return (*result, NO_REPORT_TO_CHECK, None, None, "", None)

        upload.change(
            upload_study,
            [upload, study],
            [study, image, findings, chatbot, report, consistency, prior_upload, prior_image, prior_notice, heatmap],
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

        def attach_prior(path: str | None, study_id: str | None, request: gr.Request):
            if path is not None:
                log_access(ui_client(request), study_id, "ui prior")
            return on_prior_upload(service, path, study_id)

        prior_upload.change(attach_prior, [prior_upload, study], [prior_image, prior_notice], api_name="prior")

        outputs = [chatbot, report, consistency]
        for trigger, task, text_box, api_name in [
            (generate.click, Task.REPORT, None, "report"),
            (plain.click, Task.PLAIN_LANGUAGE, None, "plain_language"),
            (summarize.click, Task.SUMMARIZE, None, "summarize"),
            (send.click, Task.CHAT, message, "chat"),
            (message.submit, Task.CHAT, message, "chat_submit"),
            (ask_region.click, Task.QUESTION, region_question, "question"),
            (correct_text.click, Task.CORRECT, correction, "correct_text"),
        ]:
            # Tasks without a text of their own read an always empty box.
            inputs = [text_box or no_text, study, chatbot]
            event = trigger(task_handler(service, task), inputs, outputs, api_name=api_name)
            if text_box in (message, correction):  # typed text empties once it is answered
                event.success(lambda: "", None, text_box, api_visibility="private")

        def ask_finding_question(finding: str | None, study_id: str | None, chat: Chat, request: gr.Request):
            log_access(ui_client(request), study_id, f"ui {Task.QUESTION}")
            yield from on_finding_question(service, finding, study_id, chat)

        def correct_ticked(drop: list[str], extra: list[str], study_id: str | None, chat: Chat, request: gr.Request):
            log_access(ui_client(request), study_id, f"ui {Task.CORRECT}")
            yield from on_task(service, Task.CORRECT, "", drop, extra, study_id, chat)

        ask_finding.click(
            ask_finding_question, [finding_question, study, chatbot], outputs, api_name="finding_question"
        )
        correct.click(correct_ticked, [remove, add, study, chatbot], outputs, api_name="correct").success(
            lambda: ([], []), None, [remove, add], api_visibility="private"
        )

        def apply_user_edit(text: str, study_id: str | None, chat: Chat, request: gr.Request):
            log_access(ui_client(request), study_id, "ui edit")
            return on_apply_edit(service, text, study_id, chat)

        def show_finding_heatmap(finding: str | None, study_id: str | None, request: gr.Request):
            log_access(ui_client(request), study_id, "ui heatmap")
            return on_heatmap(service, finding, study_id)

        def export_study(study_id: str | None, request: gr.Request):
            log_access(ui_client(request), study_id, "ui export")
            return on_export(service, study_id)

        apply_edit.click(apply_user_edit, [report, study, chatbot], [chatbot, report, consistency], api_name="edit")
        show_heatmap.click(show_finding_heatmap, [heatmap_finding, study], [heatmap], api_name="heatmap")
        export.click(export_study, [study], [exported], api_name="export")
    return blocks
