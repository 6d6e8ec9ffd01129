"""How a run is spread over processes, and how a step's pages divide among them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AlignBenchError
from .base import opt

STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class ParallelConfig:
    """How a run is spread over processes (ignored by a single process).

    `strategy`: "ddp" (every rank holds the whole model, gradients are all-reduced), "fsdp" (PyTorch FSDP2,
    `fully_shard`: with `--stage full` each decoder layer is sharded and the rest of the LLM is sharded together
    with the connector, so ALIGN reads the whole embedding matrix inside its forward), or "auto" (FSDP when
    `accelerate launch` runs with an FSDP config, else DDP)."""

    strategy: str = opt(
        "auto",
        "Several processes (torchrun, accelerate launch): 'ddp', 'fsdp' (FSDP2: shards "
        "the connector, and with --stage full the LLM), or 'auto' (fsdp when accelerate's config says "
        "FSDP, else ddp).",
        flag="parallel",
    )
    fsdp_reshard_after_forward: bool = True  # FSDP: free the gathered weights after each forward
    fsdp_cpu_offload: bool = False  # FSDP: keep the sharded weights, gradients and optimizer state on the CPU

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise AlignBenchError(f"unknown --parallel {self.strategy!r}; use {', '.join(STRATEGIES)}")


def batch_layout(
    batch_size: int, micro_batch_size: int | None, grad_accum: int | None, world_size: int
) -> tuple[int, int]:
    """(micro-batch size, accumulation steps) that make `batch_size` pages per optimizer step on `world_size`
    processes: batch_size = world_size x grad_accum x micro_batch_size. Give either (or neither: no
    accumulation); a layout that does not divide is one message saying which sizes would."""
    if micro_batch_size is not None and micro_batch_size < 1:
        raise AlignBenchError(f"--micro-batch-size must be at least 1, got {micro_batch_size}")
    if grad_accum is not None and grad_accum < 1:
        raise AlignBenchError(f"--grad-accum must be at least 1, got {grad_accum}")
    where = f"{world_size} process{'es' if world_size > 1 else ''}"
    if batch_size % world_size:
        raise AlignBenchError(
            f"--batch-size {batch_size} (pages per step, all processes together) does not divide "
            f"over {where}; use a multiple of {world_size}"
        )
    per_rank = batch_size // world_size
    if micro_batch_size is not None and grad_accum is not None:
        if micro_batch_size * grad_accum != per_rank:
            raise AlignBenchError(
                f"--micro-batch-size {micro_batch_size} x --grad-accum {grad_accum} must equal "
                f"--batch-size {batch_size} / {world_size} processes = {per_rank}; give one of them"
            )
        return micro_batch_size, grad_accum
    if micro_batch_size is not None:
        if per_rank % micro_batch_size:
            fits = ", ".join(str(d) for d in range(1, per_rank + 1) if per_rank % d == 0)
            raise AlignBenchError(
                f"--micro-batch-size {micro_batch_size} does not divide the {per_rank} pages each of "
                f"{where} takes per step (--batch-size {batch_size}); use one of {fits}"
            )
        return micro_batch_size, per_rank // micro_batch_size
    accum = grad_accum or 1
    if per_rank % accum:
        fits = ", ".join(str(d) for d in range(1, per_rank + 1) if per_rank % d == 0)
        raise AlignBenchError(
            f"--grad-accum {accum} does not divide the {per_rank} pages each of {where} takes per "
            f"step (--batch-size {batch_size}); use one of {fits}"
        )
    return per_rank // accum, accum
