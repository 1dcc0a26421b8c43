"""Fixtures for the app tests (API, browser, schemathesis): the `tiny` model behind a worker, built once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_processes import free_port

from radialog.app.api import create_api
from radialog.app.server import create_app
from radialog.app.service import StudyService
from radialog.app.studies import StudyStore
from radialog.app.worker import ModelWorker
from radialog.engines.transformers_engine import TransformersEngine
from radialog.model.loading import ModelSource

__all__ = [
    "api_client",
    "api_store",
    "running_server",
    "service",
    "slow_down_streaming",
    "slow_stream",
    "tiny_app",
    "tiny_worker",
    "worker",
    "xray_bytes",
]

EXAMPLE_XRAYS = sorted((Path(__file__).resolve().parents[1] / "app" / "examples").glob("*.png"))


@pytest.fixture(scope="session")
def tiny_worker(tiny_model) -> ModelWorker:
    return ModelWorker.from_model(tiny_model, ModelSource(preset="tiny"), wait_timeout_s=60)


@pytest.fixture(scope="module")
def api_store() -> StudyStore:
    return StudyStore()


@pytest.fixture(scope="module")
def api_client(tiny_worker, api_store) -> Iterator[TestClient]:
    """The API alone on the tiny model, with a store of its own per test module."""
    with TestClient(create_api(tiny_worker, api_store)) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_app(tiny_worker):
    """The full app (API and mounted UI), as `radialog serve --preset tiny` runs it."""
    return create_app(tiny_worker)


@pytest.fixture
def worker(tiny_model) -> ModelWorker:
    """Nobody may wait for the model: a job that still holds it makes the next `admit()` fail at once."""
    return ModelWorker.from_model(tiny_model, ModelSource(preset="tiny"), max_waiting=0)


@pytest.fixture
def service(worker) -> StudyService:
    return StudyService(worker, StudyStore())


@pytest.fixture(scope="session")
def xray_bytes() -> list[bytes]:
    """Two real NIH ChestX-ray14 radiographs that ship with the app as UI examples."""
    assert len(EXAMPLE_XRAYS) >= 2, "app/examples should hold two example X-rays"
    return [path.read_bytes() for path in EXAMPLE_XRAYS[:2]]


def slow_down_streaming(model, monkeypatch, delay_s: float = 0.05) -> None:
    """The tiny model streams everything in a blink: its in-process engines hand the text out three
    characters per `delay_s`."""
    original = TransformersEngine.stream

    def slowed(self, *args, **kwargs):
        with contextlib.closing(original(self, *args, **kwargs)) as pieces:
            for piece in pieces:
                for start in range(0, len(piece), 3):
                    time.sleep(delay_s)
                    yield piece[start : start + 3]

    monkeypatch.setattr(TransformersEngine, "stream", slowed)


@pytest.fixture
def slow_stream(tiny_model, monkeypatch):
    slow_down_streaming(tiny_model, monkeypatch)


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """`app` served by uvicorn on a free local port, in a thread: a real server, with real disconnects."""
    import uvicorn

    port = free_port()
    # Long-lived connections (a Gradio client's heartbeat) need not delay the end of a test.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
