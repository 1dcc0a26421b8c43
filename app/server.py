"""One process serving the REST API (/v1, /healthz, /readyz, /docs) and the Gradio UI (/ui)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from radialog.app.api import create_api
from radialog.app.database import Database
from radialog.app.service import GENERATION_TIMEOUT_S, MAX_UPLOAD_BYTES, StudyService
from radialog.app.studies import StoreSettings, StudyStore
from radialog.app.ui import CSS, THEME, build_ui
from radialog.app.worker import ModelWorker

logger = logging.getLogger(__name__)

UI_PATH = "/ui"
API_TOKEN_ENV = "RADIALOG_API_TOKEN"
UI_USER_ENV, UI_PASSWORD_ENV = "RADIALOG_UI_USER", "RADIALOG_UI_PASSWORD"
DATA_DIR_ENV, DATABASE_URL_ENV = "RADIALOG_DATA_DIR", "RADIALOG_DATABASE_URL"


def default_data_dir() -> Path:
    """$RADIALOG_DATA_DIR, else $XDG_DATA_HOME/radialog (~/.local/share/radialog): never the working directory."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "radialog"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    api_token: str | None = None
    ui_auth: tuple[str, str] | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    # Where studies are kept: PostgreSQL at `database_url` if set, else SQLite in `data_dir`; neither
    # (tests) keeps them in memory for the life of the app.
    data_dir: Path | None = None
    database_url: str | None = None
    ui_queue_size: int = 16  # Gradio's own queue in front of the worker's
    generation_timeout_s: float = GENERATION_TIMEOUT_S  # an answer taking longer is cancelled (504)
    # On SIGTERM, running requests (answers being generated) get this long to finish, then are cancelled.
    shutdown_grace_s: float = 30.0

    @classmethod
    def from_env(cls, **overrides) -> ServerSettings:
        """Secrets (the token, the UI password, the database URL with its password) come from the
        environment only, never from the command line (it shows in `ps`)."""
        user, password = os.environ.get(UI_USER_ENV), os.environ.get(UI_PASSWORD_ENV)
        if bool(user) != bool(password):
            logger.warning("set both %s and %s to protect the UI; it is open", UI_USER_ENV, UI_PASSWORD_ENV)
        return cls(
            api_token=os.environ.get(API_TOKEN_ENV) or None,
            ui_auth=(user, password) if user and password else None,
            database_url=os.environ.get(DATABASE_URL_ENV) or None,
            **{"data_dir": default_data_dir(), **overrides},
        )


def create_app(worker: ModelWorker, settings: ServerSettings = ServerSettings()) -> FastAPI:
    # One store for both: UI studies count against the same caps and expire like API studies.
    database = Database.open(settings.database_url, settings.data_dir)
    logger.info("studies are kept in %s", database.where)
    store = StudyStore(settings.store, database)
    app = create_api(
        worker,
        store,
        api_token=settings.api_token,
        generation_timeout_s=settings.generation_timeout_s,
        lifespan=_closing(database),
    )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/")

    ui_service = StudyService(worker, store, generation_timeout_s=settings.generation_timeout_s)
    blocks = build_ui(ui_service).queue(max_size=settings.ui_queue_size)
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


def _closing(database: Database):
    """The app's lifespan: at shutdown the study database is flushed and closed."""

    @contextlib.asynccontextmanager
    async def lifespan(_) -> AsyncIterator[None]:
        yield
        # uvicorn runs this after its graceful shutdown: every request has finished or been cancelled.
        if database.where == ":memory:":
            return  # (tests) closing would lose it, and there is no file to flush
        database.checkpoint()  # SQLite: the write-ahead log into the file, even with other processes on it
        database.close()
        logger.info("study database %s closed", database.where)

    return lifespan


def serve(worker: ModelWorker, settings: ServerSettings) -> None:
    import uvicorn

    if worker.is_demo:
        logger.warning("serving demo weights (%s): not for clinical use", worker.model_id)
    if settings.api_token is None:
        logger.info("the API is open: set %s to require a Bearer token", API_TOKEN_ENV)
    app = create_app(worker, settings)
    base = f"http://{settings.host}:{settings.port}"
    logger.info("RaDialog UI at %s%s/ , API docs at %s/docs", base, UI_PATH, base)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with this handler that
    # ends the process with status 0 (an orderly stop, as `docker stop` asks for) instead of dying of it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
