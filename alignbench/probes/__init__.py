"""Probes on trained runs: how each connector holds up under noise, and what ALIGN's vocabulary
distribution looks like.

- `noise`: Gaussian noise added to the vision tower's output features at evaluation time,
  F' = F + N(0, sigma^2), as in AlignVLM's robustness analysis; sigma is absolute (the paper's sigma = 3) or
  relative to the standard deviation of the clean features. Also the cosine distance between each
  connector's outputs on clean and on noisy features.
- `image`: corruptions a scanner makes (blur, JPEG, downscaling, rotation, pixel noise) applied to the page
  images before the vision tower, so the feature-noise result is checked against realistic noise.
- `vocab`: ALIGN's distribution over the LLM vocabulary averaged over the patches of N pages, and the
  pruning experiment (E_text restricted to the top-k tokens, then re-evaluated).

A probe re-uses the trained weights of existing run directories under `--output`, found by their training key
(`alignbench.run.reuse.trained_run`, `common`); it trains only the runs that are missing, through the same `run`
as every other command. The same noise tensor is used for every connector. `write` writes and reads the results.
"""
