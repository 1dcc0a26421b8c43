"""`radialog serve --preset tiny` processes on one study store: a SIGKILLed server, started again, has
every study, report and turn, and the conversation continues; two servers on one PostgreSQL database
see each other's studies."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from server_processes import clean_env, free_port, server_process
from store_fixtures import *  # noqa: F403 (pytest fixtures)

from radialog.app.server import DATABASE_URL_ENV


@contextlib.contextmanager
def serve(database_url: str, log_path) -> Iterator[tuple[httpx.Client, subprocess.Popen]]:
    """A `radialog serve --preset tiny` process on the store, once its model is ready."""
    port = free_port()
    env = clean_env()
    command = [sys.executable, "-m", "radialog.cli", "serve", "--preset", "tiny", "--port", str(port)]
    if database_url.startswith("postgresql://"):
        env[DATABASE_URL_ENV] = database_url
    else:
        command += ["--data-dir", database_url]
    with server_process(command, port, env, log_path) as served:
        yield served


def upload(client: httpx.Client, data: bytes) -> str:
    response = client.post("/v1/studies", files={"file": ("xray.png", data, "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ask(client: httpx.Client, study_id: str, **body) -> dict:
    response = client.post(f"/v1/studies/{study_id}/messages", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow  # two server start-ups
def test_a_killed_server_restarts_with_every_study_and_the_conversation_continues(database_url, xray_bytes, tmp_path):
    log = tmp_path / "server.log"
    with serve(database_url, log) as (client, process):
        study_id = upload(client, xray_bytes[0])
        other_id = upload(client, xray_bytes[1])
        assert client.post(f"/v1/studies/{study_id}/report").status_code == 200
        ask(client, study_id, task="correct", remove=["Edema"])
        ask(client, study_id, message="Is there a pneumothorax?", task="question")
        before = client.get(f"/v1/studies/{study_id}").json()
        process.send_signal(signal.SIGKILL)
        process.wait()
    with serve(database_url, log) as (client, _):
        after = client.get(f"/v1/studies/{study_id}").json()
        assert after == before, "the study, its findings, report and transcript are all there"
        assert client.get(f"/v1/studies/{other_id}").status_code == 200
        follow_up = ask(client, study_id, message="Is the heart enlarged?", task="question")
        assert follow_up["report"] == before["report"]
        turns = client.get(f"/v1/studies/{study_id}").json()["turns"]
        assert [t["task"] for t in turns] == ["report", "correct", "question", "question"]


@pytest.mark.slow  # two server start-ups
def test_two_servers_on_one_postgresql_database_see_each_others_studies(postgres_server, xray_bytes, tmp_path):
    postgres_server.execute("CREATE DATABASE shared_by_two")
    url = postgres_server.url("shared_by_two")
    with serve(url, tmp_path / "a.log") as (a, _), serve(url, tmp_path / "b.log") as (b, _):
        study_id = upload(a, xray_bytes[0])
        report = b.post(f"/v1/studies/{study_id}/report").json()["report"]  # b restores a's study
        assert a.get(f"/v1/studies/{study_id}").json()["report"] == report
        ask(a, study_id, message="Is there any effusion?", task="question")
        assert [t["task"] for t in b.get(f"/v1/studies/{study_id}").json()["turns"]] == ["report", "question"]
        assert b.delete(f"/v1/studies/{study_id}").status_code == 204
        assert a.get(f"/v1/studies/{study_id}").status_code == 404
