#!/usr/bin/env bash
# The learning-rate search of the smollm2 study, on the DocVQA-like validation split (never the test split):
#   bash results/smollm2/tune.sh [CONNECTORS]     (default: every built-in connector; each trial is one training
#                                                  of the full recipe: about 11 min for MLP, 13 for ALIGN)
# Every trial: the backbone's recipe at its full budget (alignbench.train.RECIPES: the connector alone on page
# transcription for 200 steps, then LoRA on the LLM with the connector on the mixture for 100), on the study's
# training mixture, the same batches and seeds; each connector tries the same learning rates: the default 3e-3 and
# 1e-2. At 3e-3 every connector's transcription loss is still falling at step 200 (seed 0: MLP 1.06, Perceiver 2.22,
# Ovis 2.57, ALIGN 3.09 over steps 176-200), so the larger rate is the one that could change the outcome; 1e-3 was
# the lower neighbour in the previous recipe's search. A shorter search does
# not separate the rates: reading emerges between transcription steps 75 and 175, and a 120-step trial (80 + 40)
# of MLP scored 1.0 ± 1.0 on the validation split. ALIGN trains with LN2's starting gain 1 (LayerNorm's own, the
# paper's form): on this vocabulary the gain 0.03 chosen on `tiny` trained more slowly (docs/results.md, "Why ALIGN sat at 0").
# The study (study.sh) trains each connector with its best trial once lr_search.csv exists.
# Trials already trained under results/smollm2/tune, or by the study itself under results/smollm2 (the 3e-3 trial is
# seed 0's training at the default rate: same data, seeds and mixture, hence the same training key), are re-used and
# only scored on the validation split (--reuse-from).
set -euo pipefail
connectors=${1:-all}
settings=()  # ALIGN's option is passed only where ALIGN is among the connectors
if [[ ",$connectors," =~ ,(all|align), ]]; then settings=(--connector-arg align.ln2_gain_init=1); fi
alignbench tune --backbone smollm2 --connectors "$connectors" --task docvqa --lrs 3e-3,1e-2 \
  --eval-questions 100 --train-tasks docvqa,infovqa,chartqa,transcribe \
  "${settings[@]}" --output results/smollm2/tune --reuse-from results/smollm2
