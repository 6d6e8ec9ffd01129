#!/usr/bin/env bash
# Why ALIGN stalls when one task trains it briefly, and what the defaults change: single-task runs of 250 steps
# (the steps per task of the sweep's 750-step mixture) and of 750 steps (the default budget), on the embedded
# backbone, data seed 0, init seed 1234, lr 3e-3, stage `connector`.
#   - ALIGN with LN2 initialised as LayerNorm's default (gain 1, one learning rate: the paper's form) against
#     ALIGN's defaults (the flat start: gain 0.03), on DocVQA-like and ChartQA-like pages;
#   - MLP on the same single tasks, for reference;
#   - ALIGN (defaults) on one task for 750 steps, the mixture's whole budget.
# The same connectors trained on the mixture are the sweep (results/embedded); the mixture with the paper's
# LN2 initialisation, and Ovis with a N(0, 1) table, are trials of the search (results/tune).
# Output: results/ablations/ (runs, leaderboard.csv) and results/ablations/table.md.
set -e
out=results/ablations
paper_align=(--connector-arg ln2_gain_init=1 --connector-arg ln2_lr_mult=1)
run() { OMP_NUM_THREADS=1 alignbench run --output "$out" "$@"; }

short=(--steps 250)
run --connector align --task docvqa "${short[@]}" "${paper_align[@]}" & run --connector align --task docvqa "${short[@]}"; wait
run --connector align --task chartqa "${short[@]}" "${paper_align[@]}" & run --connector align --task chartqa "${short[@]}"; wait
run --connector mlp --task docvqa "${short[@]}" & run --connector mlp --task chartqa "${short[@]}"; wait
# The mixture's whole budget (750 steps) on one task: is it the budget, or the mixture?
run --connector align --task docvqa --steps 750 & run --connector align --task chartqa --steps 750; wait
alignbench leaderboard --output "$out" --markdown "$out/table.md"
