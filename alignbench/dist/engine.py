"""PyTorch's engines around what trains (DDP, FSDP2), and whole tensors out of (and into) sharded modules: what a
checkpoint, the optimizer state and the evaluation model need, so a run resumes on any number of processes."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..config.parallel import ParallelConfig
from ..errors import AlignBenchError
from .context import Dist


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
