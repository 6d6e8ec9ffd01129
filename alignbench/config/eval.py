"""How a run is scored."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    batch_size: int = 64
    blind: bool = True  # also score the shuffled-image baseline
