"""Runs: one run top to bottom (`pipeline`), with what it leans on beside it: the shared workspace, training once per
training key (`reuse`), resuming (`resume`), re-evaluating a checkpoint (`checkpoint_eval`), the output directory and
its leaderboard (`outputs`, `leaderboard`); and many runs: sweeps expanded from their options (`sweep`), in worker
processes (`parallel`) or as scheduled jobs (`jobs`)."""
