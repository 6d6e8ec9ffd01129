#!/usr/bin/env bash
# Why ALIGN stalls when one task trains it, and what the sweep's recipe changes: single-task runs of 250 steps
# (the budget of one `alignbench run`, the same number of steps per task as the sweep's mixture), on the
# embedded backbone, data seed 0, init seed 1234, lr 3e-3, stage `connector`.
#   - ALIGN with LN2 initialised as LayerNorm's default (gain 1, one learning rate: the paper's form) against
#     ALIGN's defaults (the flat start: gain 0.03, LN2's lr x 10), on DocVQA-like and ChartQA-like pages;
#   - MLP on the same single tasks, for reference.
# The same connectors trained on the mixture are the sweep (results/embedded); the mixture with the paper's
# LN2 initialisation, and Ovis with a N(0, 1) table, are trials of the search (results/tune).
# Output: results/ablations/ (runs, leaderboard.csv) and results/ablations/table.md.
set -e
out=results/ablations
paper_align=(--connector-arg ln2_gain_init=1 --connector-arg ln2_lr_mult=1)
run() { OMP_NUM_THREADS=1 alignbench run --output "$out" "$@"; }

run --connector align --task docvqa "${paper_align[@]}" & run --connector align --task docvqa; wait
run --connector align --task chartqa "${paper_align[@]}" & run --connector align --task chartqa; wait
run --connector mlp --task docvqa & run --connector mlp --task chartqa; wait
alignbench leaderboard --output "$out" --markdown "$out/table.md"
