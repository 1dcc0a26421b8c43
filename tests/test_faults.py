"""Faults inside one request: out of memory while encoding or generating, an answer over the time limit.
Each fails only its own request, with 503 or 504 and a message, and the next request succeeds."""

from __future__ import annotations

import pytest
import torch
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from fastapi.testclient import TestClient

from radialog.app.api import create_api
from radialog.app.studies import StudyStore


def fail_first_call(monkeypatch, owner, name: str, error: BaseException) -> list[int]:
    """`owner.name` raises `error` on its first call and works normally afterwards; returns the call count."""
    original = getattr(owner, name)
    calls = [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 1:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)
    return calls


def api_client(worker, **kwargs) -> TestClient:
    # `worker` lets nobody wait: a request that failed and still held the model would make the next 503.
    return TestClient(create_api(worker, StudyStore(), **kwargs))


def upload(client: TestClient, data: bytes):
    return client.post("/v1/studies", files={"file": ("xray.png", data, "image/png")})


def assert_retry_later(response, words: str) -> None:
    assert response.status_code == 503, response.text
    assert words in response.json()["detail"]
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    "error",
    [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()],
    ids=["cuda", "cpu"],
)
def test_out_of_memory_while_encoding_fails_that_upload_with_503_and_the_next_succeeds(
    worker, tiny_model, xray_bytes, monkeypatch, error
):
    calls = fail_first_call(monkeypatch, tiny_model, "encode_image", error)
    client = api_client(worker)
    assert_retry_later(upload(client, xray_bytes[0]), "out of memory")
    created = upload(client, xray_bytes[0])
    assert created.status_code == 201, created.text
    assert calls[0] == 2
    assert client.post(f"/v1/studies/{created.json()['id']}/report").status_code == 200


def test_out_of_memory_while_generating_fails_that_answer_with_503_and_the_next_succeeds(
    worker, tiny_model, xray_bytes, monkeypatch
):
    client = api_client(worker)
    study_id = upload(client, xray_bytes[0]).json()["id"]
    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    calls = fail_first_call(monkeypatch, tiny_model.language_model, "generate", error)
    assert_retry_later(client.post(f"/v1/studies/{study_id}/report"), "out of memory")
    assert client.get(f"/v1/studies/{study_id}").json()["report"] is None, "a failed answer is not a report"
    report = client.post(f"/v1/studies/{study_id}/report")
    assert report.status_code == 200, report.text
    assert report.json()["report"]
    assert calls[0] == 2


def test_an_answer_over_the_time_limit_is_cancelled_with_504_and_frees_the_model(worker, xray_bytes, slow_stream):
    client = api_client(worker, generation_timeout_s=0.3)
    study_id = upload(client, xray_bytes[0]).json()["id"]
    timed_out = client.post(f"/v1/studies/{study_id}/report")
    assert timed_out.status_code == 504, timed_out.text
    assert "0.3 s" in timed_out.json()["detail"]
    assert client.get(f"/v1/studies/{study_id}").json()["report"] is None, "a cancelled answer is not a report"
    # Nobody may wait for `worker`'s model: this upload succeeds only if the cancelled answer gave it back.
    assert upload(client, xray_bytes[1]).status_code == 201


def test_an_answer_within_the_time_limit_is_unaffected(worker, xray_bytes, slow_stream):
    client = api_client(worker, generation_timeout_s=120)
    study_id = upload(client, xray_bytes[0]).json()["id"]
    report = client.post(f"/v1/studies/{study_id}/report")
    assert report.status_code == 200, report.text
    assert report.json()["report"]
