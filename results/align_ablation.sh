#!/usr/bin/env bash
# Backbone: tiny-9c5583d0a5e8ba1a (stage 1 only; the LLM trained on exact tokens), the default when these ran.
# ALIGN stall ablation on the DocVQA-like set: same budget as the sweep (250 steps), one change each.
set -e
out=results/align_ablation
run() { OMP_NUM_THREADS=1 alignbench run --connector align --task docvqa --output "$out" "$@"; }
run --connector-arg ln2_lr_mult=30 & run --connector-arg ln2_lr_mult=100; wait
run --connector-arg ln2_gain_init=4 & run --lr 1e-2 --connector-arg ln2_lr_mult=30; wait
# the `full` stage (connector + LLM), LLM lr 1e-3, at the sweep's budget and at twice it
run --stage full --llm-lr 1e-3 & run --stage full --llm-lr 1e-3 --steps 500; wait
