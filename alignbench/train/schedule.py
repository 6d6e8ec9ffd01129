"""The one learning-rate schedule: linear warmup, then cosine decay to 0 (training, and the embedded backbones'
pretraining)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The factor on the learning rate at `step` (from 0) of `total`:
    1) linear warmup to 1 over the first `warmup` steps, 2) cosine decay to 0 over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
