#!/usr/bin/env bash
# The study on the smollm2 backbone, one seed per call so that each seed lands on its own:
#   bash results/smollm2/study.sh SEED [CONNECTORS]   (SEED = 0, 1, 2; CONNECTORS default: every built-in one)
# Every connector is trained once with the backbone's recipe (alignbench.train.RECIPES: 300 steps of 8 pages, 2
# questions per page; the connector alone on page transcription for 200 steps, then the connector with LoRA adapters
# on the LLM for 100 steps on the mixture of the three tasks and transcription), with its learning rate and options
# from the search (tune.sh, results/smollm2/tune/lr_search.csv), and scored on each task with its blind baseline.
# Data seed SEED, connector initialisation seed 1234 + SEED. Finished trainings are re-used by training key, so a
# connector added later costs its own training only.
set -euo pipefail
seed=${1:?give the seed: bash results/smollm2/study.sh SEED}
alignbench sweep --backbone smollm2 --connectors "${2:-all}" --tasks docvqa,infovqa,chartqa \
  --tuned results/smollm2/tune/lr_search.csv --seeds "$seed" --output results/smollm2
