"""The REST API on the `tiny` model: the full flow, concurrent studies, bad input, queueing and auth."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from app_fixtures import running_server, slow_down_streaming
from fastapi.testclient import TestClient
from PIL import Image

from radialog.app.api import create_api
from radialog.app.server import ServerSettings, create_app
from radialog.app.service import MAX_UPLOAD_BYTES
from radialog.app.studies import StoreSettings, StudyStore
from radialog.app.uploads import MULTIPART_OVERHEAD
from radialog.app.worker import ModelWorker
from radialog.labels import CHEXPERT_LABELS
from radialog.model.loading import ModelSource


@pytest.fixture(scope="module")
def client(tiny_app) -> TestClient:
    with TestClient(tiny_app) as client:
        yield client


def upload(client: TestClient | httpx.Client, data: bytes, name: str = "xray.png", **kwargs):
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


def _chunked_form(note_bytes: int, data: bytes, boundary: str = "radialog") -> Iterator[bytes]:
    """A `note` field, then the file, sent in pieces with no Content-Length (chunked), as a streaming client would."""
    yield f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\n'.encode()
    for start in range(0, note_bytes, 4096):
        yield b"x" * min(4096, note_bytes - start)
    yield f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'.encode()
    yield data
    yield f"\r\n--{boundary}--\r\n".encode()


def test_an_upload_over_the_limit_gets_413_however_it_is_sent(tiny_worker):
    with TestClient(create_api(tiny_worker, StudyStore(), max_upload_bytes=1000)) as client:
        # The body fits the multipart allowance but the file does not.
        response = upload(client, b"x" * 1001)
        assert response.status_code == 413 and "1,000 bytes upload limit" in response.json()["detail"]
        # No Content-Length, a small file, and a body past the limit: reading stops there.
        chunked = client.post(
            "/v1/studies",
            content=_chunked_form(MULTIPART_OVERHEAD + 2000, b"x" * 10),
            headers={"content-type": "multipart/form-data; boundary=radialog"},
        )
        assert chunked.status_code == 413 and "upload limit" in chunked.json()["detail"]
        # Within both limits, the size is fine (then the bytes are decoded: not an image).
        assert upload(client, b"x" * 1000).status_code == 415
        within = client.post(
            "/v1/studies",
            content=_chunked_form(1000, b"x" * 10),
            headers={"content-type": "multipart/form-data; boundary=radialog"},
        )
        assert within.status_code == 415, within.text


def test_a_body_declared_over_the_limit_is_refused_unread(client, xray_bytes):
    # Were the body read, this valid X-ray would make a study (201).
    declared = str(MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD + 1)
    response = upload(client, xray_bytes[0], headers={"content-length": declared})
    assert response.status_code == 413 and "64 MiB upload limit" in response.json()["detail"]


def test_an_upload_never_reaches_the_disk(client, monkeypatch):
    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    for name in ["TemporaryFile", "NamedTemporaryFile", "mkstemp"]:  # what a spooled file rolls over to
        monkeypatch.setattr(tempfile, name, no_disk)
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert buffer.tell() > 2**20, "over 1 MiB, where Starlette's form parser would spool to disk"
    response = upload(client, buffer.getvalue())
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"json": {"file": "x"}}, 422),
        ({"files": {"image": ("x.png", b"abc")}}, 422),
        ({"files": {"file": (None, b"a plain field, not a file")}}, 422),
        ({"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400),
        ({"content": b"--xyz\r\n", "headers": {"content-type": "multipart/form-data"}}, 400),
    ],
    ids=["json", "no-file-field", "file-not-a-file", "garbage", "no-boundary"],
)
def test_malformed_upload_forms_get_4xx_with_a_message(client, xray_bytes, request_kwargs, status):
    response = client.post("/v1/studies", **request_kwargs)
    assert response.status_code == status and isinstance(response.json()["detail"], str), response.text
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
        with worker.admit():  # another job holds the model and nobody may wait
            response = client.post(f"/v1/studies/{study_id}/report")
            assert upload(client, xray_bytes[0]).status_code == 503
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert client.post(f"/v1/studies/{study_id}/report").status_code == 200


def test_a_client_that_leaves_mid_stream_cancels_its_answer_and_frees_the_model(
    tiny_model, xray_bytes, monkeypatch, request
):
    slow_down_streaming(tiny_model, monkeypatch, delay_s=0.05)  # the answer would outlast the client by far
    worker = ModelWorker.from_model(tiny_model, ModelSource(preset="tiny"), max_waiting=0)
    # The garbage collector would close an abandoned stream some time; the server must not wait for it.
    gc.disable()
    request.addfinalizer(gc.enable)
    # A real server: the test client never tells the app that a client went away.
    with running_server(create_api(worker, StudyStore())) as url, httpx.Client(base_url=url, timeout=30) as http:
        files = {"file": ("x.png", xray_bytes[0])}  # a new study needs the model too, and does not stream
        study_id = http.post("/v1/studies", files=files).json()["id"]
        with http.stream("POST", f"/v1/studies/{study_id}/report", params={"stream": "true"}) as streamed:
            next(streamed.iter_text())
        # The connection is closed: the server notices, cancels the generation and gives the model back
        # long before the slowed answer could have ended.
        deadline = time.monotonic() + 5
        while (created := http.post("/v1/studies", files=files)).status_code == 503:
            assert time.monotonic() < deadline, "the model stayed held after the client left"
            time.sleep(0.1)
        assert created.status_code == 201, created.text
        turns = http.get(f"/v1/studies/{study_id}").json()["turns"]
    assert turns == [], "the abandoned report was cancelled, not recorded"


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


def test_a_full_study_store_answers_507_and_keeps_every_study(tiny_worker, xray_bytes):
    with TestClient(create_api(tiny_worker, StudyStore(StoreSettings(max_studies=2)))) as client:
        first, second = (upload(client, xray_bytes[0]).json()["id"] for _ in range(2))
        refused = upload(client, xray_bytes[0])
        assert refused.status_code == 507 and "study store is full" in refused.json()["detail"]
        assert client.get(f"/v1/studies/{first}").status_code == 200
        assert client.get(f"/v1/studies/{second}").status_code == 200


def test_studies_past_their_retention_are_gone(tiny_worker, xray_bytes):
    with TestClient(create_api(tiny_worker, StudyStore(StoreSettings(retention_days=0)))) as client:
        study_id = upload(client, xray_bytes[0]).json()["id"]
        assert client.get(f"/v1/studies/{study_id}").status_code == 404


def test_a_decompression_bomb_answers_415_with_a_message(client, decompression_bomb):
    response = upload(client, decompression_bomb)
    assert response.status_code == 415 and "too large to decode" in response.json()["detail"]


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


@pytest.mark.slow  # a real server and a Gradio client
def test_ui_studies_share_the_api_store_and_its_caps(tiny_worker, xray_bytes, tmp_path):
    from gradio_client import Client, handle_file

    app = create_app(tiny_worker, ServerSettings(store=StoreSettings(max_studies=1)))
    image = tmp_path / "xray.png"
    image.write_bytes(xray_bytes[0])
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        api_study = upload(http, xray_bytes[0]).json()["id"]
        with contextlib.closing(Client(f"{url}/ui/", verbose=False)) as ui, pytest.raises(Exception, match="full"):
            ui.predict(handle_file(str(image)), api_name="/upload")
        assert http.get(f"/v1/studies/{api_study}").status_code == 200, "the API's study keeps its place"


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(tiny_app):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", tiny_app)
    failures, calls = [], []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

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
    assert set(calls) == {operation.label for operation in operations}, "every operation was exercised"


@pytest.mark.slow  # a real server and a Gradio client
def test_ui_uploads_are_audited_like_the_apis(tiny_worker, xray_bytes, tmp_path, caplog):
    from gradio_client import Client, handle_file

    caplog.set_level(logging.INFO, logger="radialog.audit")
    image = tmp_path / "xray.png"
    image.write_bytes(xray_bytes[0])
    with running_server(create_app(tiny_worker)) as url, contextlib.closing(Client(f"{url}/ui/", verbose=False)) as ui:
        ui.predict(handle_file(str(image)), api_name="/upload")
    lines = [r.getMessage() for r in caplog.records if r.name == "radialog.audit"]
    created = [line for line in lines if line.startswith("who=127.0.0.1 ui ") and line.endswith("action=ui created")]
    assert len(created) == 1 and "study=-" not in created[0], lines


def test_every_access_is_audited_without_the_token_or_any_text(tiny_worker, xray_bytes, caplog):
    caplog.set_level(logging.INFO, logger="radialog.audit")
    bearer = {"Authorization": "Bearer s3cret"}
    with TestClient(create_api(tiny_worker, StudyStore(), api_token="s3cret")) as client:
        study_id = upload(client, xray_bytes[0], headers=bearer).json()["id"]
        report = client.post(f"/v1/studies/{study_id}/report", headers=bearer).json()["report"]
        client.post(f"/v1/studies/{study_id}/messages", json={"message": "Any effusion?"}, headers=bearer)
    lines = [r.getMessage() for r in caplog.records if r.name == "radialog.audit"]
    who = f"who=testclient token={hashlib.sha256(b's3cret').hexdigest()[:8]} study={study_id}"
    for action in ("created", "POST /v1/studies/{study_id}/report", "POST /v1/studies/{study_id}/messages"):
        assert f"{who} action={action}" in lines
    assert report and not any("s3cret" in line or "Any effusion" in line or report in line for line in lines)
