"""`alignbench prepare`: which embedded backbone to build and pretrain, and the budgets it may override (a reduced
check; the cached backbone's key records them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import opt


@dataclass
class PrepareCommand:
    backbone: str = opt(
        "tiny", "'tiny' (tower and LLM) or 'smollm2' (its token-page tower; the LLM is converted from its package)."
    )
    output: Path | None = opt(None, "Write here instead of the user cache.")
    llm_steps: int | None = opt(None, "Override the LLM pretraining steps (reduced-budget check).")
    vision_steps: int | None = opt(None, "Override the vision pretraining steps.")
    soft_input_steps: int | None = opt(None, "Override the blended-page LLM steps (stage 2).")
    vision_pool: int | None = opt(None, "Override the rendered pages per task for glyph pretraining.")
