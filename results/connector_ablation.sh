#!/usr/bin/env bash
# Why Perceiver and Ovis trail on the DocVQA-like set: one change each, same budget as the sweep (250 steps).
set -e
out=results/connector_ablation
run() { OMP_NUM_THREADS=1 alignbench run --task docvqa --output "$out" "$@"; }
run --connector perceiver --connector-arg num_latents=144   # one latent per patch: no compression
