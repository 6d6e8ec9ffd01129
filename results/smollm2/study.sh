#!/usr/bin/env bash
# The study on the smollm2 backbone, one seed per call so that each seed lands on its own:
#   bash results/smollm2/study.sh SEED [CONNECTORS]   (SEED = 0, 1, 2; CONNECTORS default: every built-in one)
# Every connector is trained once with the backbone's recipe (alignbench.train.RECIPES: 300 steps of 8 pages, 2
# questions per page; the connector alone on page transcription for 200 steps, then the connector with LoRA adapters
# on the LLM for 100 steps on the mixture of the three tasks and transcription) and scored on each task with its
# blind baseline. Data seed SEED, connector initialisation seed 1234 + SEED. Finished trainings are re-used by
# training key, so a connector added later costs its own training only.
# Learning rate and options: each connector's best trial of the search (tune.sh; seed 0 re-uses that trial's training) once
# results/smollm2/tune/lr_search.csv exists; until then every connector's default rate (3e-3 for the built-in ones)
# and ALIGN's LN2 starting gain 1, the same rule for all (a connector whose searched settings differ trains again).
set -euo pipefail
seed=${1:?give the seed: bash results/smollm2/study.sh SEED}
search=results/smollm2/tune/lr_search.csv
connectors=${2:-all}
settings=()  # ALIGN's LN2 starting gain 1 is passed only where ALIGN is among the connectors
if [[ -f $search ]]; then settings=(--tuned "$search" --reuse-from results/smollm2/tune)  # seed 0: the chosen trial
elif [[ ",$connectors," =~ ,(all|align), ]]; then settings=(--connector-arg align.ln2_gain_init=1); fi
alignbench sweep --backbone smollm2 --connectors "$connectors" --tasks docvqa,infovqa,chartqa \
  "${settings[@]}" --seeds "$seed" --output results/smollm2
# The sweep's table and record hold this call's runs; keep them per call (the report reads every run)
name=results/smollm2/seeds/seed$seed-${connectors//,/-}
mkdir -p results/smollm2/seeds
cp results/smollm2/table.md "$name.md"; cp results/smollm2/table.csv "$name.csv"; cp results/smollm2/sweep.json "$name.json"
