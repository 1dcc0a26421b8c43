#!/usr/bin/env bash
# Rebuilds radialog/demo_checkpoint/ (the app's embedded default) from nothing: synthetic data, training,
# fp16 export. Run after scripts/install.sh; then update the numbers in its MODEL_CARD.md from
# outputs/demo-turns/metrics.json and benchmarks/demo_quality.py. Re-running resumes an interrupted training.
set -euo pipefail
cd "$(dirname "$0")/.."
radialog=.venv/bin/radialog
$radialog make-synthetic --out outputs/demo-data --count 6000 --seed 0 --image-size 256 --sentences-per-finding 5 \
    --instruct-per-study 2
$radialog train scripts/demo_checkpoint.yaml
$radialog train scripts/demo_checkpoint_more.yaml  # the second language phase, from outputs/demo/final
$radialog train scripts/demo_checkpoint_turns.yaml  # the third, each answer turn weighted alike
$radialog export outputs/demo-turns/final --to radialog/demo_checkpoint --dtype float16
# peft writes a blank model-card template beside the adapter; MODEL_CARD.md is this checkpoint's card.
rm -f radialog/demo_checkpoint/adapter/README.md
