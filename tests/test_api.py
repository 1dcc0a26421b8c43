"""The REST API on the `tiny` model: the full flow, concurrent studies, bad input, queueing and auth."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from fastapi.testclient import TestClient
from PIL import Image

import app.api
from app.api import create_api
from app.studies import StoreSettings, StudyStore
from app.worker import ModelWorker
from radialog.labels import CHEXPERT_LABELS
from radialog.model.loading import ModelSource


@pytest.fixture(scope="module")
def client(tiny_app) -> TestClient:
    with TestClient(tiny_app) as client:
        yield client


def upload(client: TestClient, data: bytes, name: str = "xray.png", **kwargs):
    return client.post("/v1/studies", files={"file": (name, data, "application/octet-stream")}, **kwargs)


def assert_healthy(client: TestClient, xray: bytes) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert upload(client, xray).status_code == 201


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["model"] == "preset:tiny" and ready["demo_weights"] is True


def test_full_flow(client, xray_bytes):
    created = upload(client, xray_bytes[0])
    assert created.status_code == 201, created.text
    study = created.json()
    assert set(study["findings"]) == set(CHEXPERT_LABELS)
    study_id = study["id"]

    report = client.post(f"/v1/studies/{study_id}/report")
    assert report.status_code == 200 and report.json()["report"]

    with client.stream("POST", f"/v1/studies/{study_id}/report", params={"stream": "true"}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/plain")
        streamed_text = "".join(streamed.iter_text())
    assert streamed_text.strip()

    answer = client.post(f"/v1/studies/{study_id}/messages", json={"message": "Is there any edema?"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["task"] == "chat" and answer.json()["report"] == streamed_text.strip()

    corrected = client.post(f"/v1/studies/{study_id}/messages", json={"task": "correct", "remove": ["Edema"]})
    assert corrected.status_code == 200 and corrected.json()["report"] == corrected.json()["answer"]
    assert client.post(f"/v1/studies/{study_id}/messages", json={"task": "summarize"}).status_code == 200

    state = client.get(f"/v1/studies/{study_id}").json()
    assert [t["task"] for t in state["turns"]] == ["report", "report", "chat", "correct", "summarize"]
    assert state["turns"][2]["user"] == "Is there any edema?"
    assert state["report"] == corrected.json()["answer"]

    assert client.delete(f"/v1/studies/{study_id}").status_code == 204
    assert client.get(f"/v1/studies/{study_id}").status_code == 404


def test_concurrent_studies_never_mix(client, xray_bytes):
    ids = [upload(client, data).json()["id"] for data in xray_bytes]
    findings = [client.get(f"/v1/studies/{i}").json()["findings"] for i in ids]
    assert findings[0] != findings[1]

    def converse(index: int) -> None:
        study_id = ids[index]
        assert client.post(f"/v1/studies/{study_id}/report").status_code == 200
        for turn in range(3):
            response = client.post(f"/v1/studies/{study_id}/messages", json={"message": f"study {index} turn {turn}"})
            assert response.status_code == 200, response.text

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(converse, [0, 1]))
    for index, study_id in enumerate(ids):
        state = client.get(f"/v1/studies/{study_id}").json()
        users = [t["user"] for t in state["turns"][1:]]
        assert users == [f"study {index} turn {turn}" for turn in range(3)]
        assert state["findings"] == findings[index]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def _corrupt_dicom(chest_dicom) -> bytes:
    data = chest_dicom.read_bytes()
    return data[: len(data) // 3]  # a valid header, truncated pixel data


@pytest.mark.parametrize(
    ("make", "status", "message"),
    [
        (lambda d: b"hello, this is not an image", 415, "not a readable image"),
        (lambda d: b"", 415, "empty"),
        (_corrupt_dicom, 415, "DICOM"),
        (lambda d: b"\0" * 128 + b"DICM" + b"\xff" * 64, 415, "DICOM"),
        (lambda d: _png(8000, 7000), 415, "more than the limit"),
    ],
    ids=["text", "zero-bytes", "truncated-dicom", "garbage-dicom", "too-many-pixels"],
)
def test_bad_uploads_get_4xx_and_the_server_stays_healthy(client, xray_bytes, chest_dicom, make, status, message):
    response = upload(client, make(chest_dicom))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert_healthy(client, xray_bytes[0])


def test_oversize_upload_is_refused(client, xray_bytes, monkeypatch):
    monkeypatch.setattr(app.api, "MAX_UPLOAD_BYTES", 1000)
    monkeypatch.setattr(app.api, "MULTIPART_OVERHEAD", 10**6)  # past the header check: the read cap answers
    response = upload(client, xray_bytes[0])
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]
    monkeypatch.setattr(app.api, "MULTIPART_OVERHEAD", 0)  # the Content-Length check answers before parsing
    assert upload(client, xray_bytes[0]).status_code == 413
    monkeypatch.undo()
    assert_healthy(client, xray_bytes[0])


def test_real_dicom_upload(client, chest_dicom):
    response = upload(client, chest_dicom.read_bytes(), name="chest.dcm")
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"message": ""}, 400, "empty"),
        ({"message": "   "}, 400, "empty"),
        ({"task": "summarize"}, 400, "generate one first"),
        ({"task": "correct"}, 400, "generate one first"),
        ({"message": "x" * 5000}, 422, None),
        ({"task": "dance"}, 422, None),
    ],
)
def test_bad_messages(client, xray_bytes, body, status, message):
    study_id = upload(client, xray_bytes[0]).json()["id"]
    response = client.post(f"/v1/studies/{study_id}/messages", json=body)
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["detail"]


def test_unknown_study(client):
    assert client.post("/v1/studies/nope/report").status_code == 404
    assert client.delete("/v1/studies/nope").json()["detail"].startswith("no study")


def test_full_queue_answers_503_with_retry_after(tiny_model, xray_bytes):
    worker = ModelWorker.from_model(tiny_model, ModelSource(preset="tiny"), max_waiting=0)
    with TestClient(create_api(worker, StudyStore())) as client:
        study_id = upload(client, xray_bytes[0]).json()["id"]
        with worker.slot():  # another job holds the model and nobody may wait
            response = client.post(f"/v1/studies/{study_id}/report")
            assert upload(client, xray_bytes[0]).status_code == 503
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert client.post(f"/v1/studies/{study_id}/report").status_code == 200


def test_model_not_loaded_yet(xray_bytes):
    worker = ModelWorker(ModelSource(preset="tiny"), loader=lambda: None)
    with TestClient(create_api(worker, StudyStore())) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "loading" in ready.json()["detail"]
        assert upload(client, xray_bytes[0]).status_code == 503


def test_api_token(tiny_worker, xray_bytes):
    with TestClient(create_api(tiny_worker, StudyStore(), api_token="s3cret")) as client:
        assert upload(client, xray_bytes[0]).status_code == 401
        assert upload(client, xray_bytes[0], headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert upload(client, xray_bytes[0], headers={"Authorization": "Bearer s3cret"}).status_code == 201
        assert client.get("/healthz").status_code == 200, "health checks need no token"


def test_study_store_cap_evicts_least_recently_used(tiny_worker, xray_bytes):
    with TestClient(create_api(tiny_worker, StudyStore(StoreSettings(max_studies=2)))) as client:
        first, second = (upload(client, xray_bytes[0]).json()["id"] for _ in range(2))
        client.get(f"/v1/studies/{first}")  # used: the second is now the oldest
        upload(client, xray_bytes[0])
        assert client.get(f"/v1/studies/{first}").status_code == 200
        assert client.get(f"/v1/studies/{second}").status_code == 404


def test_study_expiry(tiny_worker, xray_bytes):
    with TestClient(create_api(tiny_worker, StudyStore(StoreSettings(ttl_s=0)))) as client:
        study_id = upload(client, xray_bytes[0]).json()["id"]
        assert client.get(f"/v1/studies/{study_id}").status_code == 404


def test_openapi_schema_has_examples(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ["/v1/studies", "/v1/studies/{study_id}/report", "/v1/studies/{study_id}/messages", "/readyz"]:
        assert path in paths
    assert schema["components"]["schemas"]["MessageIn"]["examples"]
    assert "503" in paths["/v1/studies"]["post"]["responses"]


def test_ui_is_mounted(client):
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "RaDialog" in page.text


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(tiny_app):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", tiny_app)
    failures, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case):
            calls.append(case.operation.label)
            case.call_and_validate(checks=[not_a_server_error])

        try:
            check()
        except Exception as err:
            failures.append(f"{operation.label}: {err}")
    assert not failures, "\n".join(failures)
    assert len(set(calls)) == 7, "every operation was exercised"
