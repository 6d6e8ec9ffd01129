"""How a run is scored."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AlignBenchError
from .base import opt

EVAL_DTYPES = ("auto", "float32", "model")


@dataclass
class EvalConfig:
    batch_size: int = opt(64, "Questions per evaluation batch.", flag="eval-batch-size")
    blind: bool = opt(True, "Also score the shuffled-page blind baseline.")
    # Why float32 on the CPU: a bfloat16 LLM's greedy answers depend on which rows share a batch (docs/results.md)
    dtype: str = opt(
        "auto",
        "Precision of the LLM while scoring: 'auto' (float32 on the CPU, so that an answer does not depend on "
        "the batch it is in, where it fits in half the available memory; else, and on a GPU, the model's own), "
        "'float32', or 'model' (as it trained).",
        flag="eval-dtype",
    )

    def validate(self) -> None:
        if self.batch_size < 1:
            raise AlignBenchError(f"--eval-batch-size must be at least 1, got {self.batch_size}")
        if self.dtype not in EVAL_DTYPES:
            raise AlignBenchError(f"unknown --eval-dtype {self.dtype!r}; use {', '.join(EVAL_DTYPES)}")
