"""How a run is scored."""

from __future__ import annotations

from dataclasses import dataclass

from .base import opt


@dataclass
class EvalConfig:
    batch_size: int = opt(64, "Questions per evaluation batch.", flag="eval-batch-size")
    blind: bool = opt(True, "Also score the shuffled-page blind baseline.")
