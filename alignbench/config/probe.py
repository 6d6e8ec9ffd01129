"""The probes of `alignbench probe`: feature noise and image corruptions on the trained runs of each connector and
seed (trained now where no run under --output or --reuse-from has the same training key), and ALIGN's vocabulary
distribution."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlignBenchError
from .base import group, opt, same_as
from .run import RunConfig
from .session import DEFAULT_OUTPUT, Session
from .sweep import Selection

SIGMA_MODES = ("absolute", "relative")


@dataclass
class ProbeCommand:
    """What every probe of trained runs shares: which runs (connectors x seeds, configured as a sweep's runs)."""

    selection: Selection = group(Selection, only=("connectors", "connector_args", "tuned"))
    # The runs' configuration: each seed s sets the data seed (s) and the init seed (init_seed + s); the probe scores
    # without the blind baseline, in batches of --eval-batch-size, with the LLM in --eval-dtype
    run: RunConfig = group(RunConfig, skip=("connector", "connector_args", "eval.blind", "parallel", "data.seed"))
    seeds: list[int] = opt([0], "Comma-separated seeds (data seed s, init seed init_seed + s).", example="0,1,2")
    output: Path = opt(DEFAULT_OUTPUT, "Where the runs are (leaderboard.csv) and probes/ goes.")
    reuse_from: list[Path] = same_as(Session, "reuse_from")


@dataclass
class NoiseProbeCommand(ProbeCommand):
    """`alignbench probe noise`: Gaussian noise on the vision features at evaluation time."""

    sigmas: list[float] = opt([0.0, 0.5, 1.0, 3.0], "Comma-separated noise levels; 0 = clean.", example="0,0.5,1,3")
    sigma_mode: str = opt(
        "absolute",
        "'absolute' (F + N(0, σ²), the paper's σ = 3) or 'relative' (σ times the clean features' standard deviation).",
    )
    noise_seed: int = opt(0, "Seed of the noise (the same noise for every connector).")

    def validate(self) -> None:
        if self.sigma_mode not in SIGMA_MODES:
            raise AlignBenchError(f"unknown --sigma-mode {self.sigma_mode!r}; use absolute or relative")
        if any(not (s >= 0 and math.isfinite(s)) for s in self.sigmas):
            text = ",".join(f"{s:g}" for s in self.sigmas)
            raise AlignBenchError(f"--sigmas must be finite and non-negative, got {text!r}")

    def levels(self) -> list[float]:
        """The noise levels probed: the clean score (σ = 0), which the drop is measured from, comes first."""
        return self.sigmas if 0.0 in self.sigmas else [0.0, *self.sigmas]


@dataclass
class ImageProbeCommand(ProbeCommand):
    """`alignbench probe image`: image corruptions a scanner makes, applied before the vision tower."""

    corruptions: str = opt(
        "blur,jpeg,downscale,rotate,pixel",
        "NAME[:SEVERITY 1-3], comma-separated (blur, jpeg, downscale, rotate, pixel; severity 2 by default).",
    )


@dataclass
class VocabProbeCommand:
    """`alignbench probe vocab`: ALIGN's vocabulary distribution over the patches of N pages of a run's task."""

    run: Path = opt(help="An ALIGN run directory (with connector.safetensors).")
    docs: int = opt(100, "Pages whose patches are averaged.")
    top_k: list[int] = opt(
        [5, 10, 20, 50], "Comma-separated vocabulary sizes for the pruning experiment.", example="5,10,20"
    )
    output: Path | None = opt(None, "Where probes/ goes (default: the run's output directory).")
    device: str = same_as(RunConfig, "device")

    def validate(self) -> None:
        if any(k < 1 for k in self.top_k):
            text = ",".join(map(str, self.top_k))
            raise AlignBenchError(f"--top-k {text!r} must be positive vocabulary sizes, e.g. 5,10,20")
        if self.docs < 1:
            raise AlignBenchError(f"--docs must be at least 1, got {self.docs}")
