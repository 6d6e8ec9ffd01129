#!/usr/bin/env bash
# The study on the smollm2 backbone, one seed per call so that each seed lands on its own:
#   bash results/smollm2/study.sh SEED        (SEED = 0, 1, 2; about 45 minutes each on the 2-core CPU)
# Every connector is trained once on the mixture of the three tasks and the transcription task (the backbone's
# recipe, alignbench.train.RECIPES) and scored on each task with its blind baseline.
set -euo pipefail
seed=${1:?give the seed: bash results/smollm2/study.sh SEED}
alignbench sweep --backbone smollm2 --connectors mlp,perceiver,ovis,align --tasks docvqa,infovqa,chartqa \
  --seeds "$seed" --output results/smollm2
