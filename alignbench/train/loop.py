"""Brief training, fair by construction: every connector sees the same batches in the same order
for the same number of steps (the data seed), while its initialisation has a seed of its own.

Training data may mix several tasks (`TrainSource` per task, e.g. the three document tasks, as the
paper trains one model per connector on a document mixture): step k takes its pages from source k mod n,
each source with its own seeded order, so every connector still sees the same batches in the same order.

Stages: `connector` trains the connector alone (vision tower and LLM frozen); `full` trains the
connector and the LLM (the vision tower stays frozen); `lora` trains the connector and LoRA adapters on the
LLM (`alignbench.model.lora`, through peft). With `llm_steps` the LLM trains only in the last `llm_steps` steps:
the steps before them are the connector stage (the paper's two stages in one run, one schedule per stage).
AdamW, linear warmup then cosine decay, gradient clipping, bf16 autocast on CUDA.

Given a run directory, training is resumable: every `checkpoint_every` steps (and after the last step) it
writes a checkpoint (`alignbench.model.checkpoint`) with the trained weights, the optimizer's moments, the step,
the RNG state and the data order; started again on the same directory it continues from the latest one
and ends with the same weights as a run that was never interrupted. A NaN or infinite loss (or gradient
norm) stops training with `TrainingDiverged`, naming the step; the last good checkpoint is kept.

On several processes (torchrun, accelerate launch; `alignbench.dist`) a step is still `batch_size`
pages, the same pages in the same order: each process takes its contiguous share, cut into micro-batches
of `micro_batch_size` pages with gradient accumulation filling the difference (batch_size = processes x
accumulation x micro-batch). The loss of a step is the sum over its answer tokens divided by their number in
the whole step (all micro-batches of all processes), so N processes, or one process accumulating N
micro-batches, compute the same gradient. DDP or FSDP2 (PyTorch's) synchronise the gradients; only rank 0
writes checkpoints, and a checkpoint holds whole tensors, so a run resumes on any number of processes.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..config.parallel import ParallelConfig
from ..config.session import DEFAULT_CHECKPOINT_EVERY
from ..config.train import TrainConfig, connector_stage_sources
from ..data.batches import BatchOrder, collate, pages
from ..data.splits import Split
from ..dist.context import Dist, context, placement, rank_slices, resolve_parallel
from ..dist.engine import (
    full_state,
    full_tensor,
    load_full_state,
    load_optimizer_state,
    optimizer_state,
    wrap_for_training,
)
from ..errors import AlignBenchError
from ..model import lora
from ..model.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ..model.vlm import VLM
from ..task import Task
from .schedule import warmup_cosine
from .tracking import open_tracker


class TrainingDiverged(AlignBenchError):
    """The loss (or gradient norm) became NaN or infinite; `step` counts from 1, `checkpoint_step` is the
    step of the last good checkpoint (None when none was written)."""

    def __init__(self, message: str, step: int, checkpoint_step: int | None):
        super().__init__(message)
        self.step, self.checkpoint_step = step, checkpoint_step


@dataclass
class TrainSource:
    """One task's training pages: its samples and their vision features (indexed by `Sample.image`)."""

    task: Task
    split: Split
    features: Any  # [n_images, N, d] tensor, PatchBatch or LazyFeatures


def source_seed(data_seed: int, index: int) -> int:
    """The batch-order seed of the index-th training source (the first uses the data seed itself)."""
    return data_seed + 1_000_003 * index


def source_of_step(step: int, llm_start: int, stage_sources: list[int] | None, n: int) -> int:
    """Which training source step `step` draws from: in turn over every source (step k: source k mod n), or, with
    sources of its own for the connector stage, in turn over those before `llm_start` and over every source from
    it on."""
    if stage_sources is None:
        return step % n
    if step < llm_start:
        return stage_sources[step % len(stage_sources)]
    return (step - llm_start) % n


def llm_trained(model: VLM, stage: str) -> torch.nn.Module | None:
    """What trains in the LLM: the whole LLM (`full`), its LoRA adapters (`lora`) or nothing."""
    return {"full": model.llm, "lora": lora.adapters(model.llm) if stage == "lora" else None}.get(stage)


def set_trainable(model: VLM, stage: str) -> dict[str, int]:
    """Freeze explicitly; returns parameter counts per module and whether they train."""
    model.vision.requires_grad_(False)
    model.llm.requires_grad_(False)
    trained = llm_trained(model, stage)
    if trained is not None:
        trained.requires_grad_(True)
    model.connector.requires_grad_(True)
    count = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in (("vision", model.vision), ("llm", model.llm), ("connector", model.connector))
    }
    count["llm_trained"] = sum(p.numel() for p in trained.parameters()) if trained is not None else 0
    trainable = count["connector"] + count["llm_trained"]
    return {**count, "trainable": trainable, "frozen": sum(count.values()) - trainable - count["llm_trained"]}


def train(
    model: VLM,
    sources: list[TrainSource],
    cfg: TrainConfig,
    data_seed: int,
    device: str = "cpu",
    progress=None,
    log=print,
    *,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    dist: Dist | None = None,
    parallel: ParallelConfig | None = None,
) -> dict:
    """Train in place on pre-computed vision features; step k takes `cfg.batch_size` pages of source k mod n.
    Returns training statistics.

    With `checkpoint_dir` (a run directory), checkpoints are written every `checkpoint_every` steps (0: only
    after the last step) and training resumes from the latest one found there. `dist` is the process group
    (default: the current one); with FSDP the trained modules are left sharded (`dist.engine.unshard_into`)."""
    cfg.validate()
    dist = dist or context()
    parallel = resolve_parallel(parallel or ParallelConfig())
    micro, accum = cfg.layout(dist.world_size)
    if checkpoint_every < 0:
        raise AlignBenchError(f"--checkpoint-every must be 0 (last step only) or more, got {checkpoint_every}")
    counts = set_trainable(model, cfg.stage)
    llm_start = cfg.llm_start()
    log(
        f"parameters: trainable {counts['trainable']:,} (connector {counts['connector']:,}"
        f"{f', llm {cfg.stage} ' + format(counts['llm_trained'], ',') if cfg.stage != 'connector' else ''}), "
        f"frozen {counts['frozen']:,}"
        + (f"; the LLM trains from step {llm_start + 1} of {cfg.steps}" if 0 < llm_start < cfg.steps else "")
    )
    if dist.enabled or accum > 1:
        log(
            f"{dist.world_size} process{'es' if dist.enabled else ''}"
            f"{f' ({parallel.strategy})' if dist.enabled else ''}, {cfg.batch_size} pages per step: micro-batches "
            f"of {micro} pages, gradient accumulation {accum}"
        )
    if not sources:
        raise AlignBenchError("no training data: give at least one training task")
    # Every connector gets the same pages in the same order: one seeded order per source.
    page_groups = [pages(src.split, cfg.questions_per_page) for src in sources]
    for src, groups_of_src in zip(sources, page_groups):
        if not groups_of_src:
            raise AlignBenchError(
                f"the {src.task.name} training split has no page with a usable question; check the data"
            )
    orders = [BatchOrder(len(g), cfg.batch_size, source_seed(data_seed, i)) for i, g in enumerate(page_groups)]
    stage_sources = connector_stage_sources(cfg, [src.task.name for src in sources])
    # What a checkpoint must agree on to be continued (weights of another configuration are refused); the
    # number of processes is not part of it: a run resumes on any number.
    identity = {
        "train": cfg.key_fields(),
        "data_seed": data_seed,
        "connector": type(model.connector).__name__,
        "pages": [len(g) for g in page_groups],
        "tasks": [src.task.name for src in sources],
    }
    engine = wrap_for_training(model, cfg.stage, dist, parallel, device)  # FSDP replaces the parameters: before
    groups = model.connector.param_groups(cfg.lr)  # the optimizer is built on what the engine left
    trained_llm = llm_trained(model, cfg.stage)
    if trained_llm is not None:
        groups.append({"params": list(trained_llm.parameters()), "lr": cfg.llm_lr, "llm": True})
    for g in groups:
        g["base_lr"] = g["lr"]
    llm_params = [p for g in groups if g.get("llm") for p in g["params"]]
    llm_warmup = cfg.warmup_steps if cfg.llm_steps is None else max(1, cfg.llm_steps // 10)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    modules = {"connector": model.connector} | (
        {"llm" if cfg.stage == "full" else "lora": trained_llm} if trained_llm is not None else {}
    )
    losses: list[float] = []
    curve: list[dict] = []  # per step: step, task, loss, lr (connector), llm_lr, seconds since training began
    start, previous_seconds, ckpt_step = 0, 0.0, None
    cuda = [torch.device(device).index or 0] if device.startswith("cuda") else []
    # Training draws from its own RNG stream (seeded by the data seed), saved in every checkpoint.
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(data_seed)
        if checkpoint_dir is not None:
            start, losses, curve, previous_seconds = _resume(
                checkpoint_dir, modules, opt, orders, identity, device, cuda, dist
            )
            ckpt_step = start or None
            if start:
                model.connector.on_llm_loaded(model.llm)
                log(f"resuming from the checkpoint after step {start} of {cfg.steps}")
        model.connector.train()
        model.llm.train(cfg.stage != "connector")
        tracker = (
            open_tracker(cfg.report_to, checkpoint_dir, {"train": asdict(cfg), "data_seed": data_seed})
            if dist.is_main and checkpoint_dir is not None
            else None
        )
        t0 = time.time()
        task_id = progress.add_task("train", total=cfg.steps, completed=start, loss=float("nan")) if progress else None
        for step in range(start, cfg.steps):
            which = source_of_step(step, llm_start, stage_sources, len(sources))
            # In the connector stage the LLM's gradients would be dropped (below): on one process they are not
            # computed at all (the same numbers, a cheaper backward). DDP and FSDP keep the set of parameters that
            # need gradients fixed, so there they are computed and dropped.
            if llm_params and not dist.enabled and llm_params[0].requires_grad != (step >= llm_start):
                for p in llm_params:
                    p.requires_grad_(step >= llm_start)
            src, idx = sources[which], orders[which].next()  # the step's pages, the same for any number of processes
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * (
                    (warmup_cosine(step - llm_start, cfg.steps - llm_start, llm_warmup) if step >= llm_start else 0.0)
                    if g.get("llm")
                    else warmup_cosine(step, cfg.steps, cfg.warmup_steps)
                )
            micro_batches = []
            for part in rank_slices(idx, dist, micro, accum):
                chosen = [[src.split.samples[i] for i in page_groups[which][k]] for k in part]
                micro_batches.append((chosen, *collate(model.tokenizer, src.task, chosen)))
            # 1. the step's answer tokens, over every micro-batch of every process: what the loss divides by
            tokens = dist.sum(sum(VLM.answer_tokens(labels) for *_, labels in micro_batches))
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # read once per step, not per micro-batch
            # 2. forward and backward per micro-batch; gradients are synchronised after the last one (DDP
            #    and FSDP average over processes, hence the factor world_size)
            for k, (chosen, ids, mask, labels) in enumerate(micro_batches):
                feats = src.features[[page[0].image for page in chosen]].to(device)
                with engine.sync(last=k == len(micro_batches) - 1):
                    with autocast:
                        part_sum = engine.module(feats, ids.to(device), mask.to(device), labels.to(device))
                    (part_sum * (dist.world_size / tokens.item())).backward()
                loss_sum += part_sum.detach().double()
            # 3. the step's mean loss, the same number on every process (so all stop together if it diverged)
            loss = (dist.sum(loss_sum) / tokens).item()
            if not math.isfinite(loss):
                _diverged(f"loss is {loss}", step + 1, cfg.steps, ckpt_step, checkpoint_dir)
            if step < llm_start:  # the connector stage: the LLM's gradients are dropped (AdamW skips them, moments
                for p in llm_params:  # and all), so the LLM stage starts as a stage of its own would
                    p.grad = None
            norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            if not torch.isfinite(norm):
                _diverged(f"gradient norm is {norm.item()}", step + 1, cfg.steps, ckpt_step, checkpoint_dir)
            opt.step()
            losses.append(loss)
            done = step + 1
            lrs = [g["lr"] for g in opt.param_groups]
            llm_lr = next((float(f"{g['lr']:.6g}") for g in opt.param_groups if g.get("llm")), None)
            curve.append(
                {
                    "step": done,
                    "task": src.task.name,
                    "loss": round(loss, 6),
                    "lr": float(f"{lrs[0]:.6g}"),
                    "llm_lr": llm_lr,
                    "seconds": round(previous_seconds + time.time() - t0, 3),
                }
            )
            if tracker is not None:
                tracker.log({k: v for k, v in curve[-1].items() if isinstance(v, float) and k != "seconds"}, step=done)
            due = done == cfg.steps or (checkpoint_every and done % checkpoint_every == 0)
            if checkpoint_dir is not None and due:
                state = {
                    "identity": identity,
                    "data_order": [o.state_dict() for o in orders],
                    "losses": losses,
                    "curve": curve,
                    "train_seconds": previous_seconds + time.time() - t0,
                }
                rng = {"rng.torch": torch.get_rng_state()} | (
                    {"rng.cuda": torch.cuda.get_rng_state(cuda[0])} if cuda else {}
                )
                module_states = {k: full_state(m, dist) for k, m in modules.items()}  # every rank: collectives
                moments = optimizer_state(opt)
                if dist.is_main:
                    save_checkpoint(checkpoint_dir, done, module_states, moments, state, rng)
                ckpt_step = done
            if progress:
                progress.update(task_id, advance=1, loss=sum(losses[-20:]) / len(losses[-20:]))
        seconds = previous_seconds + time.time() - t0
        if tracker is not None:
            tracker.finish()
    opt.zero_grad(set_to_none=True)
    model.eval()
    tail = losses[-20:]
    stats = {
        "train_seconds": round(seconds, 2),
        "final_loss": round(sum(tail) / max(1, len(tail)), 4),
        "first_loss": round(losses[0], 4) if losses else None,
        "params": counts,
        "distributed": placement(parallel, dist, micro, accum),
        "curve": curve,
    }
    return stats | ({"resumed_from_step": start} if start else {})


def _resume(
    checkpoint_dir: Path,
    modules: dict,
    opt,
    orders: list[BatchOrder],
    identity: dict,
    device: str,
    cuda: list[int],
    dist: Dist,
) -> tuple[int, list[float], list[dict], float]:
    """Restore the latest checkpoint of `checkpoint_dir`, if any: (completed steps, losses, curve, seconds so far).
    Every process reads it (the run directory must be on a file system they all see)."""
    found = latest_checkpoint(checkpoint_dir)
    seen = dist.gather(found[0] if found else None)
    if len(set(seen)) > 1:
        raise AlignBenchError(
            f"the processes see different checkpoints in {checkpoint_dir} (steps {seen} by rank); "
            "the output directory must be on a file system every process sees"
        )
    if found is None:
        return 0, [], [], 0.0
    state, module_states, moments, extra = load_checkpoint(checkpoint_dir, sorted(modules))
    if state.get("identity") != identity:
        raise AlignBenchError(
            f"the checkpoint in {found[1]} was written by another training configuration; "
            "start a new run instead of resuming this one"
        )
    try:
        for key, module in modules.items():
            load_full_state(module, module_states[key], f"checkpoint {found[1]} ({key})")
        load_optimizer_state(opt, moments)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise AlignBenchError(
            f"checkpoint {found[1]} does not fit this model ({type(exc).__name__}: {exc}); start a new run"
        ) from None
    for order, saved in zip(orders, state["data_order"]):
        order.load_state_dict(saved)
    torch.set_rng_state(extra["rng.torch"])
    if cuda and "rng.cuda" in extra:
        torch.cuda.set_rng_state(extra["rng.cuda"], cuda[0])
    losses = [float(x) for x in state["losses"]]
    # A checkpoint written before curves were kept: its steps' losses, without learning rates or times.
    curve = state.get("curve") or [{"step": k + 1, "loss": x} for k, x in enumerate(losses)]
    return int(state["step"]), losses, curve, float(state["train_seconds"])


def _diverged(what: str, step: int, steps: int, ckpt_step: int | None, checkpoint_dir: Path | None) -> None:
    kept = (
        f"the last good checkpoint (after step {ckpt_step}) is kept in {Path(checkpoint_dir) / 'checkpoints'}"
        if ckpt_step and checkpoint_dir is not None
        else "no checkpoint had been written"
    )
    raise TrainingDiverged(
        f"training diverged: {what} at step {step} of {steps}; {kept}; no results were written. "
        "Lower --lr and start a new run",
        step,
        ckpt_step,
    )
