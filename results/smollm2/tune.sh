#!/usr/bin/env bash
# The learning-rate search of the smollm2 study, on the DocVQA-like validation split (never the test split):
#   bash results/smollm2/tune.sh [CONNECTORS]     (default: every built-in connector; about 5 min per trial of MLP,
#                                                  Perceiver or Ovis and 8 min per trial of ALIGN on the 2-core CPU)
# Every trial: the backbone's recipe (alignbench.train.RECIPES: the connector alone on page transcription, then
# LoRA on the LLM with the connector on the mixture) at 40 % of the budget, 120 steps (80 + 40), on the study's
# training mixture, the same batches and seeds; each connector tries the same learning rates. ALIGN trains with
# LN2's starting gain 1 (LayerNorm's own, the paper's form): on this vocabulary the gain 0.03 chosen on `tiny`
# trained more slowly (README, "Why ALIGN sat at 0").
# The study (study.sh) trains each connector with its best trial: lr_search.csv, read by `sweep --tuned`.
# Trials already trained under results/smollm2/tune (same training key) are re-used and only scored again, so adding
# a connector costs its own trials.
set -euo pipefail
alignbench tune --backbone smollm2 --connectors "${1:-all}" --task docvqa --lrs 1e-3,3e-3 \
  --steps 120 --eval-questions 100 --train-tasks docvqa,infovqa,chartqa,transcribe \
  --connector-arg align.ln2_gain_init=1 --output results/smollm2/tune
