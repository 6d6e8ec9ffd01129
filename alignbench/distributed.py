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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .errors import AlignBenchError

STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class ParallelConfig:
    """How a run is spread over processes (ignored by a single process).

    `strategy`: "ddp" (every rank holds the whole model, gradients are all-reduced), "fsdp" (PyTorch FSDP2,
    `fully_shard`: with `--stage full` each decoder layer is sharded and the rest of the LLM is sharded together
    with the connector, so ALIGN reads the whole embedding matrix inside its forward), or "auto" (FSDP when
    `accelerate launch` runs with an FSDP config, else DDP)."""

    strategy: str = "auto"
    fsdp_reshard_after_forward: bool = True  # FSDP: free the gathered weights after each forward
    fsdp_cpu_offload: bool = False  # FSDP: keep the sharded weights, gradients and optimizer state on the CPU

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise AlignBenchError(f"unknown --parallel {self.strategy!r}; use {', '.join(STRATEGIES)}")


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


def env_layout() -> tuple[int, int, int]:
    """(rank, world size, local rank) as the launcher set them, before any process group exists."""
    try:
        return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise AlignBenchError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun or accelerate "
                              "launch)") from None


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


def batch_layout(batch_size: int, micro_batch_size: int | None, grad_accum: int | None,
                 world_size: int) -> tuple[int, int]:
    """(micro-batch size, accumulation steps) that make `batch_size` pages per optimizer step on `world_size`
    processes: batch_size = world_size x grad_accum x micro_batch_size. Give either (or neither: no
    accumulation); a layout that does not divide is one message saying which sizes would."""
    if micro_batch_size is not None and micro_batch_size < 1:
        raise AlignBenchError(f"--micro-batch-size must be at least 1, got {micro_batch_size}")
    if grad_accum is not None and grad_accum < 1:
        raise AlignBenchError(f"--grad-accum must be at least 1, got {grad_accum}")
    where = f"{world_size} process{'es' if world_size > 1 else ''}"
    if batch_size % world_size:
        raise AlignBenchError(f"--batch-size {batch_size} (pages per step, all processes together) does not divide "
                              f"over {where}; use a multiple of {world_size}")
    per_rank = batch_size // world_size
    if micro_batch_size is not None and grad_accum is not None:
        if micro_batch_size * grad_accum != per_rank:
            raise AlignBenchError(f"--micro-batch-size {micro_batch_size} x --grad-accum {grad_accum} must equal "
                                  f"--batch-size {batch_size} / {world_size} processes = {per_rank}; give one of them")
        return micro_batch_size, grad_accum
    if micro_batch_size is not None:
        if per_rank % micro_batch_size:
            fits = ", ".join(str(d) for d in range(1, per_rank + 1) if per_rank % d == 0)
            raise AlignBenchError(f"--micro-batch-size {micro_batch_size} does not divide the {per_rank} pages each of "
                                  f"{where} takes per step (--batch-size {batch_size}); use one of {fits}")
        return micro_batch_size, per_rank // micro_batch_size
    accum = grad_accum or 1
    if per_rank % accum:
        fits = ", ".join(str(d) for d in range(1, per_rank + 1) if per_rank % d == 0)
        raise AlignBenchError(f"--grad-accum {accum} does not divide the {per_rank} pages each of {where} takes per "
                              f"step (--batch-size {batch_size}); use one of {fits}")
    return per_rank // accum, accum


def rank_slices(indices: Iterable[int], dist: Dist, micro_batch_size: int, grad_accum: int) -> list[list[int]]:
    """This rank's micro-batches of a global batch: rank r takes the r-th contiguous block of the batch, cut
    into `grad_accum` micro-batches. With one process and accumulation A the micro-batches are the same pages
    as A processes without accumulation, so training does not depend on the number of processes."""
    indices = list(indices)
    per_rank = micro_batch_size * grad_accum
    mine = indices[dist.rank * per_rank : (dist.rank + 1) * per_rank]
    return [mine[k * micro_batch_size : (k + 1) * micro_batch_size] for k in range(grad_accum)]


# ---------------------------------------------------------------- the engines: DDP and FSDP2 around what trains


class LossModule(torch.nn.Module):
    """What trains, as one module whose forward is the summed answer-token loss: DDP and FSDP act on a module's
    forward. It holds the connector and the LLM (the vision tower is frozen and runs before, on features)."""

    def __init__(self, model):
        super().__init__()
        self.connector = model.connector
        self.llm = model.llm
        self.__dict__["vlm"] = model  # the merge path and the loss live in VLM (not a submodule: no second name)

    def forward(self, features, input_ids, attention_mask, labels) -> torch.Tensor:
        return self.vlm.loss(features, input_ids, attention_mask, labels, "sum")


@dataclass
class Engine:
    """A LossModule as the chosen engine wrapped it: call `module`; `sync(last)` turns gradient
    synchronisation off for all but the last micro-batch of a step."""

    module: torch.nn.Module  # what forward is called on (the LossModule, or DDP around it)
    inner: LossModule
    strategy: str  # "single", "ddp" or "fsdp"
    fsdp_roots: tuple = ()

    @contextmanager
    def sync(self, last: bool):
        if self.strategy == "ddp" and not last:
            with self.module.no_sync():
                yield
            return
        for root in self.fsdp_roots:
            root.set_requires_gradient_sync(last)
        yield


def wrap_for_training(model, stage: str, dist: Dist, parallel: ParallelConfig, device: str) -> Engine:
    """Wrap what trains in PyTorch's DDP or FSDP2 (`fully_shard`); a single process trains it as it is.

    FSDP with `stage="full"` shards each decoder layer (the LLM's `_no_split_modules`) on its own and the rest
    (embeddings, final norm, LM head) together with the connector in the root unit: ALIGN reads the
    embedding matrix inside its forward, which runs inside the root's, where that matrix is whole. With
    `stage="connector"` only the connector is sharded (the frozen LLM stays as it is, shared with other runs)."""
    inner = LossModule(model)
    if not dist.enabled:
        return Engine(inner, inner, "single")
    if parallel.strategy == "ddp":
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # Inputs are already on this rank's device; buffers (rotary tables) are constants, never re-sent.
        quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                 inspect.signature(DistributedDataParallel.__init__).parameters else {"broadcast_buffers": False})
        return Engine(DistributedDataParallel(inner, device_ids=None, **quiet), inner, "ddp")
    if stage == "lora":
        raise AlignBenchError("--stage lora trains on one process or with --parallel ddp, not fsdp (the adapters are "
                              "small; DDP replicates them)")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    if str(device).startswith("cuda") and torch.distributed.get_backend() == "gloo":
        raise AlignBenchError("--parallel fsdp needs one GPU per process (NCCL); these processes share GPUs, so "
                              "use --parallel ddp or fewer processes per machine")
    mesh = init_device_mesh("cuda" if str(device).startswith("cuda") else "cpu", (dist.world_size,))
    kwargs = {"mesh": mesh, "reshard_after_forward": parallel.fsdp_reshard_after_forward,
              "offload_policy": CPUOffloadPolicy() if parallel.fsdp_cpu_offload else OffloadPolicy()}
    if stage == "full":
        layers = set(getattr(model.llm, "_no_split_modules", None) or ())
        for module in list(model.llm.modules()):
            if type(module).__name__ in layers:
                fully_shard(module, **kwargs)
        roots = (fully_shard(inner, **kwargs),)
    else:
        roots = (fully_shard(model.connector, **kwargs),)
    return Engine(inner, inner, "fsdp", roots)


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(module: torch.nn.Module) -> bool:
    return any(_is_dtensor(p) for p in module.parameters())


def _unique_state(module: torch.nn.Module) -> dict:
    """`module.state_dict(keep_vars=True)` without the second name of a tied tensor (as safetensors' save_model)."""
    seen, out = set(), {}
    for name, t in module.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def full_state(module: torch.nn.Module, dist: Dist) -> dict[str, torch.Tensor]:
    """The module's whole tensors on the CPU, on rank 0 ({} elsewhere); every rank must call it (sharded
    tensors are gathered one at a time, in the same order on every rank)."""
    out = {}
    for name, t in _unique_state(module).items():
        whole = t.full_tensor() if _is_dtensor(t) else t
        if dist.is_main:
            out[name] = whole.detach().to("cpu", copy=True).contiguous()
    return out


def full_tensor(t):
    """A tensor or a sharded tensor (DTensor) as one whole tensor (a collective for a DTensor)."""
    return t.full_tensor() if _is_dtensor(t) else t


@torch.no_grad()
def load_full_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy whole tensors (as `full_state` gives them) into `module`, sharding them where the module is sharded.
    A tied tensor is filled through its first name."""
    from torch.distributed.tensor import distribute_tensor

    targets = _unique_state(module)
    missing, unexpected = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
    if missing or unexpected:
        raise AlignBenchError(f"{what} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                              "it was written by another configuration")
    for name, target in targets.items():
        source = state[name]
        if _is_dtensor(target):
            source = distribute_tensor(source.to(target.device_mesh.device_type), target.device_mesh,
                                       target.placements, src_data_rank=None)  # every rank holds the whole
        target.copy_(source.to(dtype=target.dtype))


@torch.no_grad()
def unshard_into(sharded: torch.nn.Module, plain: torch.nn.Module) -> torch.nn.Module:
    """Fill `plain` (the same architecture, unsharded) with `sharded`'s whole tensors, one at a time on every
    rank: the evaluation model after FSDP training, which every rank then holds whole."""
    targets = _unique_state(plain)
    for name, t in _unique_state(sharded).items():
        targets[name].copy_(full_tensor(t))
    return plain


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` with sharded moments gathered whole (every rank must call it); its parameter
    indices follow the parameter groups, which are the same whatever the engine, so a checkpoint written by
    N processes resumes on M."""
    state = optimizer.state_dict()
    return {"state": {idx: {k: full_tensor(v) if torch.is_tensor(v) else v for k, v in entry.items()}
                      for idx, entry in state["state"].items()},
            "param_groups": state["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load what `optimizer_state` gave, sharding each moment like its parameter."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = {}
    for idx, entry in state["state"].items():
        p = params[int(idx)]
        out[idx] = {k: distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements,
                                         src_data_rank=None)
                    if _is_dtensor(p) and torch.is_tensor(v) and v.shape == p.shape else v
                    for k, v in entry.items()}
    optimizer.load_state_dict({"state": out, "param_groups": state["param_groups"]})
