"""How the runs of a sweep are handed out: in this process, as local processes, or to a scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AlignBenchError

LAUNCHERS = ("inline", "local", "submitit")
CLUSTERS = ("slurm", "local", "debug")


@dataclass
class LaunchConfig:
    launcher: str = "inline"
    jobs: int = 1  # inline: worker processes; local: jobs running at once (submitit: the scheduler decides)
    nproc_per_job: int = 1  # processes per job and node (one per GPU): torchrun (local) or tasks (submitit)
    nodes_per_job: int = 1  # submitit on SLURM only
    cluster: str = "slurm"  # submitit: slurm, local (its local executor) or debug (in this process)
    partition: str | None = None  # SLURM partition
    time_min: int = 240  # SLURM time limit per job, minutes
    slurm_args: dict[str, str] = field(default_factory=dict)  # more sbatch settings: account, qos, constraint, ...
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
            raise AlignBenchError("--nproc-per-job and --nodes-per-job need --launcher local or submitit (inline jobs "
                                  "run in this process; start the sweep itself with torchrun to spread them)")
        if self.nodes_per_job > 1 and not (self.launcher == "submitit" and self.cluster == "slurm"):
            raise AlignBenchError("--nodes-per-job above 1 needs --launcher submitit --cluster slurm")
        if self.launcher == "submitit":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise AlignBenchError("--launcher submitit needs submitit: pip install 'alignbench[distributed]'") \
                    from None

    @property
    def world_size(self) -> int:
        return self.nproc_per_job * self.nodes_per_job
