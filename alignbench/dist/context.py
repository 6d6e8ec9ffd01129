"""Several processes, one run: the process group that torchrun, `accelerate launch` or SLURM (through submitit)
starts, and the few collective steps AlignBench needs on top of PyTorch's own engines (DDP, FSDP2).

Every launcher sets the same environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which
`init_from_env` turns into a `torch.distributed` process group (gloo on the CPU, NCCL on GPUs). The rules:

* every rank computes (training micro-batches, evaluation batches); **only rank 0 writes** (run directory,
  journal, leaderboard), and what it decides from the file system (a run directory's name, an error) is
  broadcast, so every rank takes the same path and fails with the same message;
* evaluation batches are dealt round-robin and their predictions gathered (`map_batches`): a batch's
  predictions do not depend on which rank computes it, so N ranks give exactly one process's predictions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from ..config.parallel import ParallelConfig
from ..errors import AlignBenchError
from .env import env_layout


def accelerate_settings() -> dict:
    """What `accelerate launch` passes down from its config, read from the environment it sets."""
    env = os.environ
    flag = lambda name, default="false": env.get(name, default).strip().lower() in ("1", "true", "yes")  # noqa: E731
    return {"fsdp": flag("ACCELERATE_USE_FSDP"), "fsdp_version": env.get("FSDP_VERSION"),
            "deepspeed": flag("ACCELERATE_USE_DEEPSPEED"),
            "reshard_after_forward": flag("FSDP_RESHARD_AFTER_FORWARD", "true"),
            "offload_params": flag("FSDP_OFFLOAD_PARAMS")}


def resolve_parallel(cfg: ParallelConfig) -> ParallelConfig:
    """The strategy actually used: "auto" follows an accelerate FSDP config; DeepSpeed is refused."""
    cfg.validate()
    acc = accelerate_settings()
    if acc["deepspeed"]:
        raise AlignBenchError("accelerate is configured for DeepSpeed, which AlignBench does not drive; use "
                              "distributed_type: FSDP (fsdp_version: 2) or MULTI_GPU in the accelerate config")
    if acc["fsdp"] and acc["fsdp_version"] not in (None, "2"):
        raise AlignBenchError(f"the accelerate config asks for FSDP version {acc['fsdp_version']}; AlignBench shards "
                              "with FSDP2 (fully_shard): set fsdp_version: 2")
    if acc["fsdp"] and cfg.strategy in ("auto", "fsdp"):  # the accelerate config's FSDP settings
        return ParallelConfig("fsdp", acc["reshard_after_forward"], acc["offload_params"])
    return ParallelConfig("ddp" if cfg.strategy == "auto" else cfg.strategy, cfg.fsdp_reshard_after_forward,
                          cfg.fsdp_cpu_offload)


def placement(parallel: ParallelConfig, dist: Dist, micro: int, accum: int) -> dict:
    """How a run is spread, as config.json and results.json record it (`distributed`)."""
    out = {"world_size": dist.world_size, "grad_accum": accum, "micro_batch_size": micro,
           "strategy": parallel.strategy if dist.enabled else "single"}
    if dist.enabled and parallel.strategy == "fsdp":
        out |= {"fsdp_reshard_after_forward": parallel.fsdp_reshard_after_forward,
                "fsdp_cpu_offload": parallel.fsdp_cpu_offload}
    return out


class SharedError(AlignBenchError):
    """An error every rank raises together (decided once, broadcast): only rank 0 prints it."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. `Dist()` is a single process: every method is then a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, value: torch.Tensor | float) -> torch.Tensor:
        """The sum over ranks, in float64 on the CPU (exact for token counts, one rounding for losses)."""
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu().reshape(1).clone()
        if self.enabled:
            torch.distributed.all_reduce(t)
        return t[0]

    def on_main(self, fn: Callable, *args, **kwargs):
        """`fn` runs on rank 0 only (it touches the file system); its result, or its error, reaches every rank."""
        if not self.enabled:
            return fn(*args, **kwargs)
        outcome: tuple = (None, None)
        if self.is_main:
            try:
                outcome = (fn(*args, **kwargs), None)
            except Exception as exc:  # every rank must leave together, whatever rank 0 met
                outcome = (None, exc)
        value, error = self.broadcast((outcome[0], None if outcome[1] is None else _describe(outcome[1])))
        if self.is_main and outcome[1] is not None:
            raise outcome[1]
        if error is not None:
            raise SharedError(error)
        return value

    def main_first(self, fn: Callable):
        """`fn()` on each machine's local rank 0 first (it fills the caches on disk: data, features, downloads),
        then on the other processes, which read what it left. If it fails on a first process, every process stops
        (the others without trying), with that process's message."""
        if not self.enabled:
            return fn()
        value, error = None, None
        if self.local_rank == 0:
            try:
                value = fn()
            except Exception as exc:
                error = exc
        failures = [m for m in self.gather(None if error is None else f"rank {self.rank}: {_describe(error)}") if m]
        if error is not None:
            raise error
        if failures:
            raise SharedError(failures[0])
        return value if self.local_rank == 0 else fn()

    def map_batches(self, batches: list, fn: Callable[[Any], Any]) -> Iterator[tuple[int, Any]]:
        """(index, fn(batch)) for every batch, in order, on every rank; rank r computes batches r, r + W, ...

        Batches are dealt in rounds of W; after each round the results are gathered, so every rank sees every
        result (rank 0 can journal them as they come). An exception on any rank stops every rank after the round
        with the same message."""
        if not self.enabled:
            for i, batch in enumerate(batches):
                yield i, fn(batch)
            return
        for start in range(0, len(batches), self.world_size):
            mine = start + self.rank
            item: tuple = (None, None)
            if mine < len(batches):
                try:
                    item = (fn(batches[mine]), None)
                except Exception as exc:
                    item = (None, f"rank {self.rank}: {_describe(exc)}")
            gathered = self.gather(item)
            errors = [e for _, e in gathered if e is not None]
            if errors:
                raise SharedError("evaluation failed on " + "; ".join(errors))
            for k, (value, _) in enumerate(gathered):
                if start + k < len(batches):
                    yield start + k, value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, AlignBenchError) else f"{type(exc).__name__}: {text}"


SINGLE = Dist()


def context() -> Dist:
    """The current process group as a `Dist` (a single process when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import torch.distributed as td

        local = int(os.environ.get("LOCAL_RANK", td.get_rank()))
        return Dist(td.get_rank(), td.get_world_size(), local)
    return SINGLE


def device_for(device: str, dist: Dist) -> str:
    """The device of this rank: "auto" and "cuda" become cuda:LOCAL_RANK (modulo the visible GPUs, so several
    ranks may share one GPU); "cpu" and an explicit "cuda:N" stay."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and dist.enabled:
        return f"cuda:{dist.local_rank % max(1, torch.cuda.device_count())}"
    return device


def init_from_env(device: str = "auto") -> Dist:
    """Join the process group the launcher described (no-op for a single process). On GPUs NCCL carries the
    tensors (gloo the CPU ones); when ranks share a GPU (more ranks on a node than GPUs), gloo carries all."""
    rank, world, local_rank = env_layout()
    if world <= 1:
        return SINGLE
    if device.startswith("cuda:"):
        raise AlignBenchError(f"--device {device} names one GPU, but {world} processes each take their own "
                              "(cuda:LOCAL_RANK); pass --device cuda or auto, and choose the GPUs with "
                              "CUDA_VISIBLE_DEVICES")
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise AlignBenchError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set; start the processes with "
                                  "torchrun, accelerate launch or srun through submitit")
        backend = "gloo"
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            shared = local_world > torch.cuda.device_count()
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
            backend = "gloo" if shared else "cuda:nccl,cpu:gloo"
        torch.distributed.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=30))
    return context()


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rank_slices(indices: Iterable[int], dist: Dist, micro_batch_size: int, grad_accum: int) -> list[list[int]]:
    """This rank's micro-batches of a global batch: rank r takes the r-th contiguous block of the batch, cut
    into `grad_accum` micro-batches. With one process and accumulation A the micro-batches are the same pages
    as A processes without accumulation, so training does not depend on the number of processes."""
    indices = list(indices)
    per_rank = micro_batch_size * grad_accum
    mine = indices[dist.rank * per_rank : (dist.rank + 1) * per_rank]
    return [mine[k * micro_batch_size : (k + 1) * micro_batch_size] for k in range(grad_accum)]
