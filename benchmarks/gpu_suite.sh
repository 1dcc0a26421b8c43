#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one run, under 8 minutes on one H200: `radialog-v1-random`
# (full size: BioViL-T, bert-base Q-Former, Vicuna-7b shapes, random weights) through
# benchmarks/generation.py, each variant against plain generate() of the same run (the bf16 line):
#   bf16 and fp16 single stream (first token, decode tok/s) and one-at-a-time concurrency,
#   bf16 batched (the batching engine's left-padded batches) at 8 and 16 sessions,
#   bf16 with a static KV cache + torch.compile,
#   4-bit NF4 when bitsandbytes imports (carry its wheel), and each run's peak memory.
#
#   bash benchmarks/gpu_suite.sh            (writes gpu-results/*.json, or $OUT/*.json)
#
# It uses the machine's own torch, transformers and peft: the package is read from this tree
# (generation.py puts it on sys.path), nothing is installed. A variant that fails is reported and
# the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."

RESULTS=${OUT:-gpu-results}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$RESULTS/gpu.csv" 2>&1 || true
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" \
    | tee "$RESULTS/versions.txt"

variant() {  # NAME SECONDS ARGS...
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" $PY benchmarks/generation.py --preset radialog-v1-random --device cuda --repeats 2 \
        --json "$RESULTS/$name.json" "$@" > "$RESULTS/$name.log" 2>&1 \
        && tail -n 12 "$RESULTS/$name.log" || echo "   $name failed (see $RESULTS/$name.log)"
}

variant bf16 90 --dtype bfloat16 --concurrency 1 8
variant fp16 75 --dtype float16 --concurrency 1
variant bf16-batched 90 --dtype bfloat16 --batched --concurrency 1 8 16
variant bf16-compile 150 --dtype bfloat16 --compile --concurrency 1
if $PY -c "import bitsandbytes" 2>/dev/null; then
    variant bf16-4bit 90 --dtype bfloat16 --quantization 4bit --concurrency 1
else
    echo "== bf16-4bit skipped: bitsandbytes does not import here"
fi
