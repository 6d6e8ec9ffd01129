#!/usr/bin/env bash
# The learning-rate search of the smollm2 study, on the DocVQA-like validation split (never the test split):
#   bash results/smollm2/tune.sh        (about 45 minutes on the 2-core CPU)
# Every trial: the backbone's recipe (connector stage, then LoRA on the LLM) at a reduced budget of 100 steps on
# the study's training mixture, the same batches and seeds; each connector tries the same learning rates. ALIGN
# also tries the two LN2 starting gains measured in the README (0.03, tuned on `tiny`, and LayerNorm's own 1).
# The study (study.sh) trains each connector with its best trial: lr_search.csv, read by `sweep --tuned`.
# Every built-in connector takes part; trials already trained under results/smollm2/tune (same training key) are
# re-used and only scored again, so adding a connector costs its own trials.
set -euo pipefail
alignbench tune --backbone smollm2 --connectors all --task docvqa --lrs 1e-3,3e-3 \
  --steps 100 --eval-questions 100 --train-tasks docvqa,infovqa,chartqa,transcribe \
  --grid align.ln2_gain_init=0.03,1 --output results/smollm2/tune
