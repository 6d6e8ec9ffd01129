#!/usr/bin/env bash
# Probes and report of the smollm2 study (after results/smollm2/study.sh; they read the sweep's trained runs):
#   bash results/smollm2/probes.sh [SEEDS] [CONNECTORS]     (default: seed 0, every built-in connector)
# The noise probe finds each connector's trained run of each seed by its training configuration (the same settings
# rule as study.sh: the search's best trial once results/smollm2/tune/lr_search.csv exists, else the default rates
# and ALIGN's LN2 starting gain 1), so it trains nothing that the study trained. The report joins noise probes with
# the same flags (each connector and seed: its newest measurement), so a connector added later is probed alone.
set -euo pipefail
out=results/smollm2
mix=docvqa,infovqa,chartqa,transcribe  # the sweep trained every connector on this mixture: the probes read those runs
seeds=${1:-0}
search=$out/tune/lr_search.csv
connectors=${2:-all}
settings=()  # ALIGN's LN2 starting gain 1 is passed only where ALIGN is among the connectors
if [[ -f $search ]]; then settings=(--tuned "$search" --reuse-from $out/tune)  # seed 0: the search trained it
elif [[ ",$connectors," =~ ,(all|align), ]]; then settings=(--connector-arg align.ln2_gain_init=1); fi
alignbench probe noise --backbone smollm2 --connectors "$connectors" --task docvqa --sigmas 0,0.5,1,3 \
  --seeds "$seeds" --train-tasks $mix "${settings[@]}" --output $out
if [[ ",$connectors," =~ ,(all|align), ]]; then  # the vocabulary probe reads ALIGN's newest DocVQA run
  alignbench probe vocab --run "$(ls -d $out/runs/docvqa-align-* | tail -1)" --docs 100 --top-k 50
fi
alignbench report --runs $out --out $out/REPORT.md
