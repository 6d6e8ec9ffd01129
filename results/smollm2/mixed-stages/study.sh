#!/usr/bin/env bash
# The study on the smollm2 backbone, one seed per call so that each seed lands on its own:
#   bash results/smollm2/study.sh SEED        (SEED = 0, 1, 2; about an hour each on the 2-core CPU)
# Every built-in connector (connectors added since a seed ran are trained when it runs again; finished trainings
# are re-used by training key) is trained once with the backbone's recipe (alignbench.train.RECIPES: 200 steps of
# 8 pages on the mixture of the three tasks and the transcription task; the connector alone, then LoRA on the LLM for the last
# 40 %), with its learning rate and options from the search (tune.sh, results/smollm2/tune/lr_search.csv), and
# scored on each task with its blind baseline. Data seed SEED, connector initialisation seed 1234 + SEED.
set -euo pipefail
seed=${1:?give the seed: bash results/smollm2/study.sh SEED}
alignbench sweep --backbone smollm2 --connectors all --tasks docvqa,infovqa,chartqa \
  --tuned results/smollm2/tune/lr_search.csv --seeds "$seed" --output results/smollm2
