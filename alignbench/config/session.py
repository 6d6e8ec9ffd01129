"""What a command does around its runs, apart from what they are: plug-ins, the feature cache, re-use of trained
weights, checkpoints, and where output goes by default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import opt

DEFAULT_OUTPUT = Path("alignbench-runs")
DEFAULT_CHECKPOINT_EVERY = 50  # steps; a checkpoint of a small connector takes milliseconds


@dataclass
class Session:
    plugins: list[Path] = opt(
        [],
        "Import connectors/tasks from this Python file or package directory (repeatable); "
        "nothing else is imported implicitly.",
        flag="plugin",
        repeat=True,
    )
    feature_cache: bool = opt(
        True,
        "Keep the frozen vision tower's features on disk ($ALIGNBENCH_CACHE/features) and "
        "reuse them across runs, processes and sweeps.",
    )
    reuse_from: list[Path] = opt(
        [],
        "Another output directory (of a run, sweep or search) whose trained weights are "
        "re-used where the training configuration is the same (training key); repeatable, "
        "searched after --output.",
        repeat=True,
    )
    checkpoint_every: int = opt(
        DEFAULT_CHECKPOINT_EVERY, "Write a resumable checkpoint every N training steps (0: after the last step only)."
    )
