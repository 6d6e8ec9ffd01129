#!/usr/bin/env bash
# The probes, the cost table and the report committed in results/ (run after the three seeds of results/sweep.sh).
set -e
out=results/embedded
mix=docvqa,infovqa,chartqa  # the sweep trained every connector on the mixture: the probes read those runs
export OMP_NUM_THREADS=1
(alignbench probe noise --task docvqa --sigmas 0,0.5,1,3 --seeds 0,1,2 --train-tasks $mix --output $out
 alignbench probe image --task infovqa --seeds 0,1,2 --train-tasks $mix --output $out) &
(alignbench probe noise --task infovqa --sigmas 0,0.5,1,3 --seeds 0,1,2 --train-tasks $mix --output $out
 for t in docvqa infovqa; do
   alignbench probe vocab --run "$(ls -d $out/runs/$t-align-s0-* | tail -1)" --top-k 5,10,20,50
 done) &
wait
unset OMP_NUM_THREADS
alignbench cost --output $out                       # every built-in connector on the tiny backbone
python benchmarks/page_information.py --task docvqa --output $out  # characters per visual token
alignbench report --runs $out --out results/REPORT.md
