"""The process layout a launcher (torchrun, accelerate launch) states in the environment, read without torch: the
command line checks it before any command loads a model."""

from __future__ import annotations

import os

from ..errors import AlignBenchError


def env_layout() -> tuple[int, int, int]:
    """(rank, world size, local rank) as the launcher set them, before any process group exists."""
    try:
        return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise AlignBenchError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun or accelerate "
                              "launch)") from None
