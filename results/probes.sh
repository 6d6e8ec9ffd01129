#!/usr/bin/env bash
# The probes and the report committed in results/ (run after the sweep in results/README or the main README).
set -e
out=results/embedded
mix=docvqa,infovqa,chartqa  # the sweep trained every connector on the mixture: the probes read those runs
export OMP_NUM_THREADS=1
(alignbench probe noise --task docvqa --sigmas 0,0.5,1,3 --train-tasks $mix --output $out
 alignbench probe image --task infovqa --train-tasks $mix --output $out) &
(alignbench probe noise --task infovqa --sigmas 0,0.5,1,3 --train-tasks $mix --output $out
 for t in docvqa infovqa; do
   alignbench probe vocab --run "$(ls -d $out/runs/$t-align-* | tail -1)" --top-k 5,10,20,50
 done) &
wait
alignbench report --runs $out --out results/REPORT.md
