"""Load on running `radialog serve` servers: N concurrent sessions, each uploading an X-ray and streaming a
report and two follow-ups, for each server (one per engine) in one run.

    radialog serve --port 7860 --engine transformers &
    radialog serve --port 7861 --engine vllm --vllm-url http://127.0.0.1:8000 &
    python benchmarks/serving.py --target transformers=http://127.0.0.1:7860 \\
        --target vllm=http://127.0.0.1:7861 --sessions 1,4,8

or, with `--launch`, the benchmark starts the servers itself on the embedded demo checkpoint (its LLM
exported for vLLM with `radialog export --format hf --merge-lora`) and stops them afterwards: the
one-at-a-time server (`--max-batch 1`, what every request got before the engines), the batching
transformers engine (`--max-batch 8`), and the vllm engine on a vLLM server from .venv-vllm (eager mode:
CPU graph compilation would add minutes to the start):

    python benchmarks/serving.py --launch --sessions 1,4,8,16

Per server and N: time to first token (first streamed piece of each turn after its request was sent)
p50/p95, aggregate tokens/s (tokens of every answer, counted with the checkpoint's tokenizer, over the
wall time from the first upload to the last answer), and failed requests. Loopback servers only: this is
a load generator.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "app" / "examples" / "00000001_000.png"
DEFAULT_TOKENIZER = ROOT / "radialog" / "demo_checkpoint" / "tokenizer"
FOLLOW_UPS = [
    {"task": "question", "message": "Is there a pleural effusion?"},
    {"task": "summarize"},
]


@dataclass
class Level:
    target: str
    sessions: int
    ttft_s: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict:
        ttft = sorted(self.ttft_s)
        return {
            "target": self.target,
            "sessions": self.sessions,
            "turns": len(ttft),
            "ttft_p50_s": round(statistics.median(ttft), 3) if ttft else None,
            "ttft_p95_s": round(ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))], 3) if ttft else None,
            "tokens_per_s": round(self.tokens / self.wall_s, 2) if self.wall_s else None,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 2),
        }


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{url}: only loopback servers (127.0.0.1, localhost) are load-tested")


def streamed_turn(client: httpx.Client, path: str, body: dict | None, level: Level, lock: threading.Lock) -> str:
    """One streamed turn: its time to first piece goes into `level`; returns the answer."""
    sent = time.perf_counter()
    first, pieces = None, []
    with client.stream("POST", path, params={"stream": "true"}, json=body) as response:
        response.raise_for_status()
        for piece in response.iter_text():
            if piece and first is None:
                first = time.perf_counter() - sent
            pieces.append(piece)
    with lock:
        level.ttft_s.append(first if first is not None else time.perf_counter() - sent)
    return "".join(pieces)


def session(client: httpx.Client, image: bytes, tokenizer, level: Level, lock: threading.Lock) -> None:
    try:
        study = client.post("/v1/studies", files={"file": ("xray.png", image)})
        study.raise_for_status()
        base = f"/v1/studies/{study.json()['id']}"
        answers = [streamed_turn(client, f"{base}/report", None, level, lock)]
        answers += [streamed_turn(client, f"{base}/messages", body, level, lock) for body in FOLLOW_UPS]
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        with lock:
            level.tokens += tokens
    except httpx.HTTPError as err:
        with lock:
            level.errors += 1
        print(f"  {level.target}: {err}", file=sys.stderr)


def run_level(name: str, url: str, sessions: int, image: bytes, tokenizer, timeout_s: float) -> Level:
    level, lock = Level(name, sessions), threading.Lock()
    limits = httpx.Limits(max_connections=sessions)  # bounded: one connection per session
    with httpx.Client(base_url=url, timeout=timeout_s, limits=limits) as client:
        threads = [
            threading.Thread(target=session, args=(client, image, tokenizer, level, lock)) for _ in range(sessions)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        level.wall_s = time.perf_counter() - start
    return level


def wait_ready(url: str, timeout_s: float, path: str = "/readyz", process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server for {url} exited ({process.returncode}); see its log")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not become ready in {timeout_s:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched_servers(scratch: Path) -> Iterator[list[tuple[str, str]]]:
    """NAME=URL targets of servers started here (see the module's docstring); all stopped on exit, their logs
    left in `scratch`."""
    radialog = [sys.executable, "-m", "radialog.cli"]
    processes: list[subprocess.Popen] = []

    def start(command: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (scratch / log_name).open("wb")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        return processes[-1]

    def serve(name: str, *options: str) -> tuple[str, str]:
        port = free_port()
        start([*radialog, "serve", "--port", str(port), "--max-queue", "64", *options], f"{name}.log")
        return name, f"http://127.0.0.1:{port}"

    targets = [serve("one-at-a-time", "--max-batch", "1"), serve("transformers", "--max-batch", "8")]
    vllm_python = ROOT / ".venv-vllm" / "bin" / "python"
    try:
        if vllm_python.is_file():
            merged = scratch / "demo-llm"
            subprocess.run([*radialog, "export", str(DEFAULT_TOKENIZER.parent), "--to", str(merged),
                            "--format", "hf", "--merge-lora", "--dtype", "float32"], check=True)  # fmt: skip
            vllm_port = free_port()
            # 1 GiB of KV cache: by default vLLM's CPU backend reserves most of the machine's memory.
            env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
            server = start([str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(merged),
                            "--enable-prompt-embeds", "--host", "127.0.0.1", "--port", str(vllm_port),
                            "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager"],
                           "vllm-server.log", env)  # fmt: skip
            wait_ready(f"http://127.0.0.1:{vllm_port}", 600, path="/health", process=server)
            targets.append(serve("vllm", "--engine", "vllm", "--vllm-url", f"http://127.0.0.1:{vllm_port}"))
        else:
            print(f"no {vllm_python}: the vllm engine is left out (scripts/install_vllm.sh)", file=sys.stderr)
        yield targets
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        shutil.rmtree(scratch / "demo-llm", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", default=[], help="NAME=URL of a running radialog serve")
    parser.add_argument("--launch", action="store_true", help="start the servers to compare here (see above)")
    parser.add_argument("--sessions", default="1,4,8", help="concurrent sessions per level (default: 1,4,8)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="counts the answers' tokens")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    if not args.target and not args.launch:
        parser.error("give --target NAME=URL (one or more) or --launch")
    with contextlib.ExitStack() as stack:
        targets = [tuple(t.split("=", 1)) for t in args.target]
        if args.launch:
            logs = Path(tempfile.mkdtemp(prefix="radialog-serving-"))
            print(f"server logs: {logs}", file=sys.stderr)
            targets += stack.enter_context(launched_servers(logs))
        results = benchmark(targets, args)
    print("\n| engine | sessions | TTFT p50 (s) | TTFT p95 (s) | aggregate tok/s | errors |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['target']} | {r['sessions']} | {r['ttft_p50_s']} | {r['ttft_p95_s']} | "
            f"{r['tokens_per_s']} | {r['errors']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "follow_ups": FOLLOW_UPS}, indent=2))


def benchmark(targets: list[tuple[str, str]], args: argparse.Namespace) -> list[dict]:
    for _, url in targets:
        check_loopback(url)
        wait_ready(url, args.timeout)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    image = args.image.read_bytes()
    results = []
    for sessions in (int(n) for n in args.sessions.split(",")):
        for name, url in targets:  # the engines alternate at each level, so a drift in load hits both
            results.append(run_level(name, url, sessions, image, tokenizer, args.timeout).summary())
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
