#!/usr/bin/env bash
# Rebuilds radialog/demo_checkpoint/ (the app's embedded default) from nothing: synthetic data, training,
# fp16 export. Run after scripts/install.sh; then update the numbers in its MODEL_CARD.md from
# outputs/demo-polish/metrics.json, benchmarks/demo_quality.py and benchmarks/conversation_quality.py.
# Re-running resumes an interrupted training.
set -euo pipefail
cd "$(dirname "$0")/.."
radialog=.venv/bin/radialog
# Every draw writes the same 6,000 studies; only its instruct samples (seed, name, task weights) differ.
draw() {
    $radialog make-synthetic --out outputs/demo-data --count 6000 --seed 0 --image-size 256 \
        --sentences-per-finding 5 --instruct-per-study 2 "$@"
}
draw
# A second draw of instruct samples for the fourth phase, weighted towards the tasks furthest from their targets.
draw --instruct-seed 3 --instruct-name instruct-focus.jsonl \
    --task-weights CO=0.26,EL=0.20,RQA=0.18,CPbQA=0.12,CO+QA=0.10,SU=0.05,QA+QA=0.04,CPaQA=0.03,RG=0.02
# A third, for the fifth phase: weights between the standard mix and the second draw's.
draw --instruct-seed 4 --instruct-name instruct-balance.jsonl \
    --task-weights CO=0.22,CPbQA=0.16,RQA=0.16,EL=0.16,CO+QA=0.09,SU=0.08,QA+QA=0.05,CPaQA=0.04,RG=0.04
# A fourth, for the sixth phase (LoRA widened to every projection), and a fifth, towards summaries and corrections.
draw --instruct-seed 5 --instruct-name instruct-wide.jsonl \
    --task-weights CO=0.24,RQA=0.18,EL=0.16,CPbQA=0.12,SU=0.10,CO+QA=0.08,QA+QA=0.05,CPaQA=0.03,RG=0.04
draw --instruct-seed 6 --instruct-name instruct-polish.jsonl \
    --task-weights CO=0.24,SU=0.20,RQA=0.16,CPbQA=0.10,EL=0.10,CO+QA=0.08,CPaQA=0.05,QA+QA=0.04,RG=0.03
$radialog train scripts/demo_checkpoint.yaml
$radialog train scripts/demo_checkpoint_more.yaml  # the second language phase, from outputs/demo/final
$radialog train scripts/demo_checkpoint_turns.yaml  # the third, each answer turn weighted alike
$radialog train scripts/demo_checkpoint_focus.yaml  # the fourth, on the second draw
$radialog train scripts/demo_checkpoint_balance.yaml  # the fifth, on a third draw between the two mixes
$radialog train scripts/demo_checkpoint_wide.yaml  # the sixth, LoRA on every projection of the LLM
$radialog train scripts/demo_checkpoint_polish.yaml  # the seventh, at a lower learning rate
$radialog export outputs/demo-polish/final --to radialog/demo_checkpoint --dtype float16
# peft writes a blank model-card template beside the adapter; MODEL_CARD.md is this checkpoint's card.
rm -f radialog/demo_checkpoint/adapter/README.md
