"""Brief training, fair by construction: every connector sees the same batches in the same order
for the same number of steps (the data seed), while its initialisation has a seed of its own.

Stages: `connector` trains the connector alone (vision tower and LLM frozen); `full` trains the
connector and the LLM (the vision tower stays frozen). AdamW, linear warmup then cosine decay,
gradient clipping, bf16 autocast on CUDA.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .data import Split, batches, collate, pages
from .errors import AlignBenchError
from .model import VLM
from .task import Task

STAGES = ("connector", "full")


@dataclass
class TrainConfig:
    stage: str = "connector"
    steps: int = 250
    batch_size: int = 16  # pages per step (each with up to `questions_per_page` questions)
    questions_per_page: int = 8  # 1 = one question per sequence
    lr: float | None = None  # connector learning rate; None = the connector's `default_lr`
    llm_lr: float = 1e-4  # LLM learning rate in the `full` stage
    warmup_steps: int = 40
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    init_seed: int = 1234  # connector initialisation; the data seed lives in DataConfig

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise AlignBenchError(f"unknown stage {self.stage!r}; known stages: {', '.join(STAGES)}")
        for name in ("steps", "batch_size", "questions_per_page"):
            if getattr(self, name) < 1:
                raise AlignBenchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not ((self.lr is None or self.lr > 0) and self.llm_lr > 0):
            raise AlignBenchError("learning rates must be positive")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """1) linear warmup to 1, 2) cosine decay to 0 over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def set_trainable(model: VLM, stage: str) -> dict[str, int]:
    """Freeze explicitly; returns parameter counts per module and whether they train."""
    model.vision.requires_grad_(False)
    model.llm.requires_grad_(stage == "full")
    model.connector.requires_grad_(True)
    count = {name: sum(p.numel() for p in m.parameters())
             for name, m in (("vision", model.vision), ("llm", model.llm), ("connector", model.connector))}
    trainable = count["connector"] + (count["llm"] if stage == "full" else 0)
    return {**count, "trainable": trainable, "frozen": sum(count.values()) - trainable}


def train(model: VLM, task: Task, split: Split, features: torch.Tensor, cfg: TrainConfig, data_seed: int,
          device: str = "cpu", progress=None, log=print) -> dict:
    """Train in place on pre-computed vision features [n_images, N, d]; returns training statistics."""
    cfg.validate()
    counts = set_trainable(model, cfg.stage)
    log(f"parameters: trainable {counts['trainable']:,} (connector {counts['connector']:,}"
        f"{', llm ' + format(counts['llm'], ',') if cfg.stage == 'full' else ''}), frozen {counts['frozen']:,}")
    groups = model.connector.param_groups(cfg.lr)
    if cfg.stage == "full":
        groups.append({"params": list(model.llm.parameters()), "lr": cfg.llm_lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    model.connector.train()
    model.llm.train(cfg.stage == "full")
    losses: list[float] = []
    t0 = time.time()
    task_id = progress.add_task("train", total=cfg.steps, loss=float("nan")) if progress else None
    page_groups = pages(split, cfg.questions_per_page)  # every connector gets the same pages in the same order
    for step, idx in enumerate(batches(len(page_groups), cfg.batch_size, cfg.steps, data_seed)):
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, cfg.steps, cfg.warmup_steps)
        chosen = [[split.samples[i] for i in page_groups[k]] for k in idx]
        ids, mask, labels = collate(model.tokenizer, task, chosen)
        feats = features[[page[0].image for page in chosen]].to(device)
        with autocast:
            loss = model.loss(feats, ids.to(device), mask.to(device), labels.to(device))
        if not torch.isfinite(loss):
            raise AlignBenchError(f"training diverged: loss is {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if progress:
            progress.update(task_id, advance=1, loss=sum(losses[-20:]) / len(losses[-20:]))
    model.eval()
    tail = losses[-20:]
    return {"train_seconds": round(time.time() - t0, 2), "final_loss": round(sum(tail) / max(1, len(tail)), 4),
            "first_loss": round(losses[0], 4) if losses else None, "params": counts}
