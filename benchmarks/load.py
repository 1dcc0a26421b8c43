"""Load and fault test of one `radialog serve` (loopback only): N concurrent sessions, each uploading an
X-ray, generating its report and asking three follow-ups, for several rounds, then a fault round with the
study database locked mid-run.

    radialog serve --preset tiny --port 7860 &
    python benchmarks/load.py --url http://127.0.0.1:7860 --sessions 50

or, with `--launch`, on a server it starts itself (`--preset tiny`, SQLite in a temporary data directory,
or the PostgreSQL database at `--database-url`) and stops afterwards:

    python benchmarks/load.py --launch --sessions 50 --rounds 3

Per request type (upload, report, follow-up, get): p50/p95 latency of the answered requests. Per round:
503s (each must carry Retry-After and a message; the session waits `--retry-wait-s` and retries), other
5xx (must be 0), cross-session mix-ups (an answer naming another study, or a stored study that differs
from what its session was sent), and, for a launched server, its resident memory (VmRSS) after the round.

The fault round (launched SQLite servers): the benchmark takes SQLite's write lock on the server's database
(`BEGIN EXCLUSIVE`) while its sessions run and releases it after `--fault-hold-s`; writes meanwhile must
answer 503 with a message, never 500, and every session must finish once the lock is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from serving import DEFAULT_IMAGE, check_loopback, free_port, wait_ready

logger = logging.getLogger("load")

FOLLOW_UPS = [
    {"task": "question", "message": "Is there a pleural effusion?"},
    {"task": "question", "message": "Is the heart enlarged?"},
    {"task": "plain_language"},
]
MAX_THREADS = 64  # the sessions of a round run on at most this many threads
SQLITE_FILE = "studies.sqlite3"  # radialog.app.database.SQLITE_FILE, without importing the app


@dataclass
class Round:
    name: str
    sessions: int
    latency_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status_503: int = 0
    status_503_without_retry_after: int = 0
    status_503_without_message: int = 0
    # 503s by their detail (numbers as N): a busy model and a locked database tell different stories.
    messages_503: Counter = field(default_factory=Counter)
    other_5xx: list[str] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)
    mix_ups: list[str] = field(default_factory=list)
    completed: int = 0
    wall_s: float = 0.0
    rss_mib_after: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict:
        def pct(values: list[float], q: int) -> float | None:
            if len(values) < 2:
                return round(values[0], 3) if values else None
            return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)

        return {
            "round": self.name,
            "sessions": self.sessions,
            "completed": self.completed,
            "wall_s": round(self.wall_s, 1),
            "latency_s": {
                kind: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95)} for kind, v in sorted(self.latency_s.items())
            },
            "503": self.status_503,
            "503_without_retry_after": self.status_503_without_retry_after,
            "503_without_message": self.status_503_without_message,
            "503_by_message": dict(self.messages_503.most_common()),
            "other_5xx": len(self.other_5xx),
            "other_errors": len(self.other_errors),
            "mix_ups": len(self.mix_ups),
            "rss_mib_after": self.rss_mib_after,
            "examples": (self.other_5xx + self.other_errors + self.mix_ups)[:5],
        }


class Failed(Exception):
    """A session cannot go on (an unexpected status, or 503s for longer than it retries)."""


def call(client: httpx.Client, rnd: Round, kind: str, method: str, path: str, args: argparse.Namespace, **kw):
    """One request, retried after each 503; its latency (of the answered attempt) is recorded under `kind`."""
    for _ in range(args.max_attempts):
        sent = time.perf_counter()
        try:
            response = client.request(method, path, **kw)
        except httpx.TransportError as err:
            raise Failed(f"{kind}: {type(err).__name__}: {err}") from err
        elapsed = time.perf_counter() - sent
        if response.status_code != 503:
            break
        with rnd.lock:
            rnd.status_503 += 1
            rnd.status_503_without_retry_after += "Retry-After" not in response.headers
            rnd.status_503_without_message += not _detail(response)
            rnd.messages_503[re.sub(r"\d+(\.\d+)?", "N", _detail(response))] += 1
        time.sleep(args.retry_wait_s)
    else:
        raise Failed(f"{kind}: still 503 after {args.max_attempts} attempts: {_detail(response)}")
    if response.status_code >= 500:
        with rnd.lock:
            rnd.other_5xx.append(f"{kind} {response.status_code}: {response.text[:200]}")
        raise Failed("5xx")
    if response.status_code >= 400:
        raise Failed(f"{kind} {response.status_code}: {response.text[:200]}")
    with rnd.lock:
        rnd.latency_s[kind].append(elapsed)
    return response.json()


def _detail(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(response.json().get("detail") or "")
    return ""


def session(client: httpx.Client, image: bytes, rnd: Round, args: argparse.Namespace) -> None:
    """upload → report → three follow-ups, each answer checked against the session's own study."""
    try:
        created = call(client, rnd, "upload", "POST", "/v1/studies", args, files={"file": ("xray.png", image)})
        study_id = created["id"]
        base = f"/v1/studies/{study_id}"
        answers = [call(client, rnd, "report", "POST", f"{base}/report", args)]
        report = answers[0]["report"]
        answers += [call(client, rnd, "follow_up", "POST", f"{base}/messages", args, json=b) for b in FOLLOW_UPS]
        stored = call(client, rnd, "get", "GET", base, args)
        problems = [f"an answer for {a['id']}" for a in answers if a["id"] != study_id]
        if stored["id"] != study_id or stored["report"] != report:
            problems.append("the stored report differs from the one this session was sent")
        sent = [report] + [a["answer"] for a in answers[1:]]
        if [t["answer"] for t in stored["turns"]] != sent:
            problems.append("the stored turns differ from the answers this session was sent")
        with rnd.lock:
            rnd.mix_ups += [f"study {study_id}: {p}" for p in problems]
            rnd.completed += 1
        if args.cleanup:
            client.delete(base)
    except Failed as err:
        if str(err) != "5xx":
            with rnd.lock:
                rnd.other_errors.append(str(err))


def run_round(name: str, url: str, image: bytes, args: argparse.Namespace) -> Round:
    rnd = Round(name, args.sessions)
    limits = httpx.Limits(max_connections=args.sessions)  # bounded: one connection per session
    with (
        httpx.Client(base_url=url, timeout=args.timeout_s, limits=limits) as client,
        ThreadPoolExecutor(max_workers=min(args.sessions, MAX_THREADS)) as pool,
    ):
        start = time.perf_counter()
        for future in [pool.submit(session, client, image, rnd, args) for _ in range(args.sessions)]:
            future.result()
        rnd.wall_s = time.perf_counter() - start
    return rnd


@contextlib.contextmanager
def write_lock_held(database: Path, hold_s: float) -> Iterator[None]:
    """SQLite's exclusive lock on `database`, taken now and released after `hold_s` (or on exit)."""
    # Released from a timer thread, while the sessions run.
    conn = sqlite3.connect(database, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    logger.info("fault: holding the write lock on %s for %.0f s", database, hold_s)
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            conn.rollback()
            conn.close()
            released.set()
            logger.info("fault: lock released")

    timer = threading.Timer(hold_s, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextlib.contextmanager
def launched_server(scratch: Path, args: argparse.Namespace) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    command = [sys.executable, "-m", "radialog.cli", "serve", "--preset", "tiny", "--port", str(port)]
    command += ["--data-dir", str(scratch / "data"), "--max-queue", str(args.max_queue)]
    env = {k: v for k, v in os.environ.items() if k not in ("RADIALOG_DATA_DIR", "RADIALOG_DATABASE_URL")}
    if args.database_url:
        env["RADIALOG_DATABASE_URL"] = args.database_url
    log_path = scratch / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 300, process=process)
        logger.info("launched %s (pid %d, log %s)", url, process.pid, log_path)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def benchmark(url: str, process: subprocess.Popen | None, scratch: Path | None, args: argparse.Namespace) -> dict:
    image = args.image.read_bytes()
    result: dict = {"url": url, "sessions": args.sessions, "rounds": []}
    if process is not None:
        result["rss_mib_before"] = round(rss_mib(process.pid), 1)
    for index in range(args.rounds):
        rnd = run_round(f"load {index + 1}", url, image, args)
        if process is not None:
            rnd.rss_mib_after = round(rss_mib(process.pid), 1)
        result["rounds"].append(rnd.summary())
        logger.info("%s", json.dumps(rnd.summary()))
    if scratch is not None and not args.database_url and args.fault_hold_s > 0:
        with write_lock_held(scratch / "data" / SQLITE_FILE, args.fault_hold_s):
            rnd = run_round("fault: database locked", url, image, args)
        rnd.rss_mib_after = round(rss_mib(process.pid), 1)
        result["rounds"].append(rnd.summary())
        logger.info("%s", json.dumps(rnd.summary()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (loopback only)")
    parser.add_argument("--launch", action="store_true", help="start `radialog serve --preset tiny` here")
    parser.add_argument("--database-url", help="--launch: the server's PostgreSQL database (default: SQLite)")
    parser.add_argument("--max-queue", type=int, default=8, help="--launch: the server's --max-queue")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fault-hold-s", type=float, default=15.0, help="how long the fault round locks the database")
    parser.add_argument("--retry-wait-s", type=float, default=1.0, help="wait after a 503 (not its Retry-After)")
    parser.add_argument("--max-attempts", type=int, default=600, help="attempts per request before giving up")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--cleanup", action="store_true", help="delete each study once checked")
    parser.add_argument("--output", type=Path, help="write the results here as JSON too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.launch == bool(args.url):
        parser.error("give one of --url and --launch")
    if args.launch:
        with tempfile.TemporaryDirectory(prefix="radialog-load-") as tmp, launched_server(Path(tmp), args) as server:
            result = benchmark(server[0], server[1], Path(tmp), args)
    else:
        check_loopback(args.url)
        result = benchmark(args.url, None, None, args)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
