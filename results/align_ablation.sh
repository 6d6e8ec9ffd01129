#!/usr/bin/env bash
# ALIGN stall ablation on the DocVQA-like set: same budget as the sweep (250 steps), one change each.
set -e
out=results/align_ablation
run() { OMP_NUM_THREADS=1 alignbench run --connector align --task docvqa --output "$out" "$@"; }
run --connector-arg ln2_lr_mult=30 & run --connector-arg ln2_lr_mult=100; wait
run --connector-arg ln2_gain_init=4 & run --lr 1e-2 --connector-arg ln2_lr_mult=30; wait
