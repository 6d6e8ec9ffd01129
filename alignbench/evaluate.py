"""Evaluation: batched greedy generation, per-sample scores, aggregate score with standard error.

The blind baseline runs the same trained model with every question paired to another page's
features (a fixed derangement), so it measures what the model answers without seeing the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .data import Split, encode_prompt
from .metrics import get_metric, mean_stderr
from .model import VLM
from .task import Task


@dataclass
class EvalConfig:
    batch_size: int = 64
    blind: bool = True  # also score the shuffled-image baseline


def summarise(scores: list[float], splits: list[str | None]) -> dict:
    mean, stderr, n = mean_stderr(scores)
    out = {"score": mean, "stderr": stderr, "n": n}
    names = sorted({s for s in splits if s is not None})
    if names:
        out["per_split"] = {}
        for name in names:
            m, e, k = mean_stderr([x for x, s in zip(scores, splits) if s == name])
            out["per_split"][name] = {"score": m, "stderr": e, "n": k}
    return out


@torch.no_grad()
def predict(model: VLM, task: Task, split: Split, features: torch.Tensor, cfg: EvalConfig,
            image_of=None, device: str = "cpu", progress=None, label: str = "eval") -> list[str]:
    """Predictions in the order of `split.samples`; batches are sorted by prompt length."""
    tok = model.tokenizer
    prompts = [encode_prompt(tok, task, s.question) for s in split.samples]
    images = [image_of(i) if image_of else s.image for i, s in enumerate(split.samples)]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    preds: list[str] = [""] * len(prompts)
    task_id = progress.add_task(label, total=len(prompts), loss=float("nan")) if progress else None
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start : start + cfg.batch_size]
        feats = features[[images[i] for i in chunk]].to(device)
        outs = model.generate(feats, [prompts[i] for i in chunk], task.max_new_tokens)
        for i, ids in zip(chunk, outs):
            preds[i] = tok.decode(ids, skip_special_tokens=True).strip()
        if progress:
            progress.update(task_id, advance=len(chunk))
    return preds


def evaluate(model: VLM, task: Task, split: Split, features: torch.Tensor, cfg: EvalConfig,
             device: str = "cpu", progress=None) -> tuple[dict, list[dict]]:
    metric = get_metric(task.metric)
    t0 = time.time()
    model.eval()
    preds = predict(model, task, split, features, cfg, device=device, progress=progress)
    scores = [metric(p, s.answers) for p, s in zip(preds, split.samples)]
    result = {"metric": task.metric, **summarise(scores, [s.split for s in split.samples])}
    records = [{"uid": s.uid, "question": s.question, "answers": s.answers, "prediction": p, "score": sc,
                **({"split": s.split} if s.split is not None else {})}
               for s, p, sc in zip(split.samples, preds, scores)]
    if cfg.blind and len(split.images) > 1:
        # Derangement: each question sees the next unique page, never its own.
        n_img = len(split.images)
        blind_preds = predict(model, task, split, features, cfg, device=device, progress=progress, label="blind",
                              image_of=lambda i: (split.samples[i].image + 1) % n_img)
        blind_scores = [metric(p, s.answers) for p, s in zip(blind_preds, split.samples)]
        blind = summarise(blind_scores, [s.split for s in split.samples])
        result["blind"] = {"score": blind["score"], "stderr": blind["stderr"], "n": blind["n"]}
        for rec, bp in zip(records, blind_preds):
            rec["blind_prediction"] = bp
    result["eval_seconds"] = round(time.time() - t0, 2)
    return result, records
