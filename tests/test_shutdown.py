"""SIGTERM to `radialog serve --preset tiny`: a running answer finishes within the grace period (and is
stored) or is cancelled when the grace period ends; the process exits 0 and leaves the SQLite study
database flushed (no write-ahead log left)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from server_processes import clean_env, free_port, server_process
from test_store_restart import upload

from radialog.app.database import SQLITE_FILE

TESTS = Path(__file__).resolve().parent


@contextlib.contextmanager
def slow_server(data_dir: Path, log_path: Path, delay_s: float, grace_s: float):
    port = free_port()
    env = clean_env()
    env["SLOW_STREAM_DELAY_S"] = str(delay_s)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    command = [sys.executable, str(TESTS / "slow_serve.py"), "serve", "--preset", "tiny", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--shutdown-grace-s", str(grace_s)]
    with server_process(command, port, env, log_path) as served:
        yield served


def stream_then_sigterm(client: httpx.Client, process: subprocess.Popen, study_id: str) -> tuple[str, bool]:
    """Stream the study's report, sending SIGTERM once its first piece is in; (the text, whether it ended cleanly)."""
    pieces: list[str] = []
    try:
        with client.stream("POST", f"/v1/studies/{study_id}/report", params={"stream": True}) as response:
            assert response.status_code == 200
            for piece in response.iter_text():
                if not pieces:
                    process.send_signal(signal.SIGTERM)
                pieces.append(piece)
    except httpx.RemoteProtocolError:  # the server cut the answer off (cancelled)
        return "".join(pieces), False
    return "".join(pieces), True


def exit_time(process: subprocess.Popen, limit_s: float, log: Path) -> float:
    start = time.monotonic()
    try:
        assert process.wait(timeout=limit_s) == 0, log.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server was still running {limit_s} s after SIGTERM")
    return time.monotonic() - start


def stored_reports(data_dir: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(data_dir / SQLITE_FILE)) as db:
        return [row[0] for row in db.execute("SELECT report FROM report_revisions")]


def assert_flushed(data_dir: Path) -> None:
    wal = data_dir / (SQLITE_FILE + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the write-ahead log was left behind"


@pytest.mark.slow  # a server start-up and a few seconds of slowed answer
def test_sigterm_lets_a_running_answer_finish_and_stores_it(xray_bytes, tmp_path):
    log = tmp_path / "server.log"
    with slow_server(tmp_path / "data", log, delay_s=0.02, grace_s=60) as (client, process):
        study_id = upload(client, xray_bytes[0])
        text, clean = stream_then_sigterm(client, process, study_id)
        exit_time(process, 60, log)
    assert clean and text.strip(), "the answer streamed to its end"
    assert stored_reports(tmp_path / "data") == [text.strip()], "and was stored as the report"
    assert_flushed(tmp_path / "data")


@pytest.mark.slow  # a server start-up
def test_sigterm_cancels_an_answer_still_running_when_the_grace_period_ends(xray_bytes, tmp_path):
    log = tmp_path / "server.log"
    grace_s = 1.0
    with slow_server(tmp_path / "data", log, delay_s=1.0, grace_s=grace_s) as (client, process):
        study_id = upload(client, xray_bytes[0])
        started = time.monotonic()
        _, clean = stream_then_sigterm(client, process, study_id)
        assert time.monotonic() - started < grace_s + 10, "the stream was not kept open past the grace period"
        exit_time(process, grace_s + 15, log)
    assert not clean, "the answer was cut off, not completed"
    assert stored_reports(tmp_path / "data") == [], "a cancelled answer is not a report"
    assert_flushed(tmp_path / "data")
    assert "Cancel 1 running task" in log.read_text()
