"""One process serving the REST API (/v1, /healthz, /readyz, /docs) and the Gradio UI (/ui)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from radialog.app.api import create_api
from radialog.app.service import MAX_UPLOAD_BYTES, StudyService
from radialog.app.studies import StoreSettings, StudyStore
from radialog.app.ui import CSS, THEME, build_ui
from radialog.app.worker import ModelWorker

logger = logging.getLogger(__name__)

UI_PATH = "/ui"
API_TOKEN_ENV = "RADIALOG_API_TOKEN"
UI_USER_ENV, UI_PASSWORD_ENV = "RADIALOG_UI_USER", "RADIALOG_UI_PASSWORD"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    api_token: str | None = None
    ui_auth: tuple[str, str] | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    ui_queue_size: int = 16  # Gradio's own queue in front of the worker's

    @classmethod
    def from_env(cls, **overrides) -> ServerSettings:
        """Secrets come from the environment only, never from the command line (it shows in `ps`)."""
        user, password = os.environ.get(UI_USER_ENV), os.environ.get(UI_PASSWORD_ENV)
        if bool(user) != bool(password):
            logger.warning("set both %s and %s to protect the UI; it is open", UI_USER_ENV, UI_PASSWORD_ENV)
        return cls(
            api_token=os.environ.get(API_TOKEN_ENV) or None,
            ui_auth=(user, password) if user and password else None,
            **overrides,
        )


def create_app(worker: ModelWorker, settings: ServerSettings = ServerSettings()) -> FastAPI:
    # One store for both: UI studies count against the same caps and expire like API studies.
    store = StudyStore(settings.store)
    app = create_api(worker, store, api_token=settings.api_token)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/")

    blocks = build_ui(StudyService(worker, store)).queue(max_size=settings.ui_queue_size)
    return gr.mount_gradio_app(
        app,
        blocks,
        path=UI_PATH,
        auth=settings.ui_auth,
        server_name=settings.host,
        server_port=settings.port,
        max_file_size=MAX_UPLOAD_BYTES,
        theme=THEME,
        css=CSS,
        ssr_mode=False,  # SSR would start a Node server; the plain client is enough
        footer_links=["api"],
    )


def serve(worker: ModelWorker, settings: ServerSettings) -> None:
    import uvicorn

    if worker.is_demo:
        logger.warning("serving demo weights (%s): not for clinical use", worker.model_id)
    if settings.api_token is None:
        logger.info("the API is open: set %s to require a Bearer token", API_TOKEN_ENV)
    app = create_app(worker, settings)
    base = f"http://{settings.host}:{settings.port}"
    logger.info("RaDialog UI at %s%s/ , API docs at %s/docs", base, UI_PATH, base)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
