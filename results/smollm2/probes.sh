#!/usr/bin/env bash
# Probes and report of the smollm2 study (after results/smollm2/study.sh; they read the sweep's trained runs).
set -euo pipefail
out=results/smollm2
mix=docvqa,infovqa,chartqa,transcribe  # the sweep trained every connector on this mixture: the probes read those runs
seeds=${1:-0}
alignbench probe noise --backbone smollm2 --task docvqa --sigmas 0,0.5,1,3 --seeds "$seeds" --train-tasks $mix \
  --tuned $out/tune/lr_search.csv --output $out
alignbench probe vocab --run "$(ls -d $out/runs/docvqa-align-* | tail -1)" --top-k 5,10,20,50
alignbench report --runs $out --out $out/REPORT.md
