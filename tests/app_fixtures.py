"""Fixtures for the app tests (API, browser, schemathesis): the `tiny` model behind a worker, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.server import create_app
from app.worker import ModelWorker
from radialog.model.loading import ModelSource

__all__ = ["tiny_app", "tiny_worker", "xray_bytes"]

EXAMPLE_XRAYS = sorted((Path(__file__).resolve().parents[1] / "app" / "examples").glob("*.png"))


@pytest.fixture(scope="session")
def tiny_worker(tiny_model) -> ModelWorker:
    return ModelWorker.from_model(tiny_model, ModelSource(preset="tiny"), wait_timeout_s=60)


@pytest.fixture(scope="session")
def tiny_app(tiny_worker):
    """The full app (API and mounted UI), as `radialog serve --preset tiny` runs it."""
    return create_app(tiny_worker)


@pytest.fixture(scope="session")
def xray_bytes() -> list[bytes]:
    """Two real NIH ChestX-ray14 radiographs that ship with the app as UI examples."""
    assert len(EXAMPLE_XRAYS) >= 2, "app/examples should hold two example X-rays"
    return [path.read_bytes() for path in EXAMPLE_XRAYS[:2]]
