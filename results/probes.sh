#!/usr/bin/env bash
# The probes and the report committed in results/ (run after the sweep in results/README or the main README).
set -e
out=results/embedded
export OMP_NUM_THREADS=1
(alignbench probe noise --task docvqa --sigmas 0,0.5,1,3 --output $out
 alignbench probe image --task infovqa --output $out) &
(alignbench probe noise --task infovqa --sigmas 0,0.5,1,3 --output $out
 for t in docvqa infovqa; do
   alignbench probe vocab --run "$(ls -d $out/runs/$t-align-* | tail -1)" --top-k 5,10,20,50
 done) &
wait
alignbench report --runs $out --out results/REPORT.md
