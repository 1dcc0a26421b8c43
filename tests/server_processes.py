"""`radialog serve` as its own process for tests that need a real one (restarts, signals, shared stores)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from radialog.app.server import DATA_DIR_ENV, DATABASE_URL_ENV

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This environment without the store settings a developer's shell may carry."""
    return {k: v for k, v in os.environ.items() if k not in (DATA_DIR_ENV, DATABASE_URL_ENV)}


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, env: dict[str, str], log_path: Path
) -> Iterator[tuple[httpx.Client, subprocess.Popen]]:
    """Start `command` (a server on `port`), yield a client once `/readyz` answers 200; stop it on exit."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the server exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the server did not become ready"
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz").status_code == 200:
                    break
            time.sleep(0.5)
        yield client, process
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
