#!/usr/bin/env bash
# The committed embedded results (results/embedded): every built-in connector x the three tasks on the tiny
# backbone, one training seed per call so that each seed lands on its own:
#   bash results/sweep.sh SEED        (SEED = 0, 1, 2; about 30 minutes each on the 2-core CPU)
# Each connector trains once on the mixture of the three tasks (750 steps of 16 pages, its default learning rate)
# and is scored on each task with its blind baseline. Data seed SEED, connector initialisation seed 1234 + SEED.
set -euo pipefail
seed=${1:?give the seed: bash results/sweep.sh SEED}
alignbench sweep --connectors all --tasks docvqa,infovqa,chartqa --seeds "$seed" --jobs 2 --output results/embedded
cp results/embedded/sweep.json "results/embedded/sweep-s$seed.json"
