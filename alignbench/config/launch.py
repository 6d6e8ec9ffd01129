"""How the runs of a sweep are handed out: in this process, as local processes, or to a scheduler."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AlignBenchError
from .base import opt


@dataclass
class LaunchConfig:
    launcher: str = opt(
        "inline",
        "'inline' (this process, or --jobs workers), 'local' (each run its own process or "
        "torchrun) or 'submitit' (each run a SLURM job, or submitit's local executor with --cluster "
        "local).",
    )
    # submitit: the scheduler decides
    jobs: int = opt(
        1,
        "Runs at once: worker processes (inline launcher; CPU: one per core is fastest) or jobs running "
        "at once (local launcher).",
    )
    nproc_per_job: int = opt(1, "Processes per run and node (one per GPU): torchrun (local) or SLURM tasks (submitit).")
    nodes_per_job: int = opt(1, "Nodes per run (submitit on SLURM).")
    cluster: str = opt("slurm", "submitit: 'slurm', 'local' or 'debug'.")  # local: its local executor; debug: here
    partition: str | None = opt(None, "SLURM partition (submitit).")
    time_min: int = opt(240, "SLURM time limit per run, minutes (submitit).")
    slurm_args: dict[str, str] = opt(
        {},
        "More sbatch settings KEY=VALUE, e.g. account=lab, qos=high (repeatable; submitit).",
        flag="slurm-arg",
        example="account=my_lab",
    )
    poll_seconds: float = 0.25  # local launcher: how often it checks its job processes (a cheap check)

    def validate(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise AlignBenchError(f"unknown --launcher {self.launcher!r}; use {', '.join(LAUNCHERS)}")
        if self.cluster not in CLUSTERS:
            raise AlignBenchError(f"unknown --cluster {self.cluster!r}; use {', '.join(CLUSTERS)}")
        for name in ("jobs", "nproc_per_job", "nodes_per_job", "time_min"):
            if getattr(self, name) < 1:
                raise AlignBenchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.launcher == "inline" and (self.nproc_per_job > 1 or self.nodes_per_job > 1):
            raise AlignBenchError(
                "--nproc-per-job and --nodes-per-job need --launcher local or submitit (inline jobs "
                "run in this process; start the sweep itself with torchrun to spread them)"
            )
        if self.nodes_per_job > 1 and not (self.launcher == "submitit" and self.cluster == "slurm"):
            raise AlignBenchError("--nodes-per-job above 1 needs --launcher submitit --cluster slurm")
        if self.launcher == "submitit":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise AlignBenchError(
                    "--launcher submitit needs submitit: pip install 'alignbench[distributed]'"
                ) from None

    @property
    def world_size(self) -> int:
        return self.nproc_per_job * self.nodes_per_job


# the values validate() accepts
LAUNCHERS = ("inline", "local", "submitit")
CLUSTERS = ("slurm", "local", "debug")
