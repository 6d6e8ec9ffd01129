"""Pretraining of the embedded `tiny` backbone (`alignbench.backbones.tiny`): the vision tower on glyph recognition,
then the LLM on the text form of the tasks, then (stage 2) on pages whose tokens are blended. The schedule is the
one training uses (`alignbench.train.schedule`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..data.embedded.generators import sample_docs
from ..data.embedded.page import CELL_CLASSES, cell_labels, render
from ..task import TASKS
from ..train.schedule import warmup_cosine
from .base import glyph_transform

if TYPE_CHECKING:
    from .tiny import TinyConfig

TASK_NAMES = ("docvqa", "infovqa", "chartqa")  # the tasks whose pages and text the embedded backbones learn from


def page_ids(tokenizer, page_text: str) -> list[int]:
    """One token per cell, whatever the tokenizer would merge."""
    return tokenizer.convert_tokens_to_ids(list(page_text))


def fit_cell_head(
    vision,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    width: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    log_every: int,
    line,
) -> tuple[nn.Module, float]:
    """Pretrain a tower on per-cell classification: a linear head over every patch's features names what its cell
    shows (`labels` [P, N] of `classes` classes, for the pages `pixels` [P, 3, H, W]); batches drawn from `seed`,
    AdamW with the warmup + cosine schedule. Logs `line(step, loss, accuracy)` every `log_every` steps and after the
    last; returns the head (thrown away by the callers) and the running per-cell accuracy."""
    head = nn.Linear(width, classes)
    params = list(vision.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    vision.train()
    acc = 0.0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * warmup_cosine(step, steps, 20)
        idx = torch.randint(len(labels), (batch,), generator=gen)
        logits = head(vision(pixel_values=pixels[idx]).last_hidden_state)  # [B, N, C]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels[idx].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc = 0.9 * acc + 0.1 * (logits.argmax(-1) == labels[idx]).float().mean().item()
        if step % log_every == 0 or step == steps - 1:
            line(step, loss.item(), acc)
    vision.eval()
    return head, acc


def pretrain_vision(vision, cfg: TinyConfig, log=print) -> float:
    """Glyph recognition: classify each patch's cell (a glyph, blank, or a drawing)."""
    torch.manual_seed(cfg.seed)
    pages = [d.page for t in TASK_NAMES for d in sample_docs(t, cfg.vision_pool, cfg.seed + 101)]
    pixels = glyph_transform([render(p) for p in pages])  # [P, 3, H, W]
    labels = torch.tensor([cell_labels(p) for p in pages])  # [P, N]
    _, acc = fit_cell_head(
        vision,
        pixels,
        labels,
        len(CELL_CLASSES),
        cfg.vision.hidden,
        cfg.vision.steps,
        cfg.vision.batch,
        cfg.vision.lr,
        cfg.seed,
        50,
        lambda step, loss, acc: log(f"vision step {step:4d}  loss {loss:.4f}  cell accuracy {acc:.3f}"),
    )
    return acc


def text_sequence(tokenizer, doc, qas, task_suffix: str, doc_weight: float, quote_weight: float):
    """Page cells, then (question + suffix, answer, eos) pairs, then a newline and the page quoted again.

    Weights: answers 1, the quoted page `quote_weight`, the rest `doc_weight`. Quoting the page teaches the
    model to copy text it has read (the skill every extractive answer needs) with a dense signal; without it
    a model this small learns to answer names it has memorised but not to copy digits."""
    page = page_ids(tokenizer, doc.page.text())
    ids = list(page)
    weights = [doc_weight] * len(ids)
    for qa in qas:
        q = tokenizer(qa.question + task_suffix, add_special_tokens=False)["input_ids"]
        a = tokenizer(qa.answers[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids += q + a
        weights += [doc_weight] * len(q) + [1.0] * len(a)
    if quote_weight > 0:
        ids += tokenizer("\n", add_special_tokens=False)["input_ids"] + page
        weights += [doc_weight] + [quote_weight] * len(page)
    return ids, weights


def pretrain_llm(llm, tokenizer, cfg: TinyConfig, log=print) -> float:
    """Next-token training on the text form of freshly generated pages of all three tasks."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 202)
    suffix = {t: TASKS.get(t).prompt_suffix for t in TASK_NAMES}
    opt = torch.optim.AdamW(llm.parameters(), lr=cfg.llm.lr, weight_decay=0.01, betas=(0.9, 0.98))
    llm.train()
    answer_acc = 0.0
    for step in range(cfg.llm.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.llm.lr * warmup_cosine(step, cfg.llm.steps, 100)
        ids, w = _text_batch(tokenizer, cfg, rng, suffix)
        logits = llm(input_ids=ids).logits[:, :-1]  # [B, L-1, V]
        target, weight = ids[:, 1:], w[:, 1:]
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        loss = (nll * weight).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        is_answer = weight == 1.0  # answers (and eos) only
        acc = ((logits.argmax(-1) == target) & is_answer).sum().item() / max(1, is_answer.sum().item())
        answer_acc = 0.95 * answer_acc + 0.05 * acc
        if step % 100 == 0 or step == cfg.llm.steps - 1:
            log(f"llm step {step:5d}  loss {loss.item():.4f}  answer-token accuracy {answer_acc:.3f}")
    llm.eval()
    return answer_acc


def pretrain_llm_soft(llm, tokenizer, cfg: TinyConfig, log=print) -> float:
    """Stage 2: the stage-1 objective, with the page tokens of some sequences blended (see `SoftInput`)."""
    torch.manual_seed(cfg.seed + 303)
    rng = np.random.default_rng(cfg.seed + 303)
    suffix = {t: TASKS.get(t).prompt_suffix for t in TASK_NAMES}
    embed = llm.get_input_embeddings()
    n_page = cfg.rows * cfg.cols
    opt = torch.optim.AdamW(llm.parameters(), lr=cfg.soft_input.lr, weight_decay=0.01, betas=(0.9, 0.98))
    llm.train()
    loss_avg = float("nan")
    for step in range(cfg.soft_input.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.soft_input.lr * warmup_cosine(step, cfg.soft_input.steps, 30)
        ids, w = _text_batch(tokenizer, cfg, rng, suffix)
        embeds = embed(ids)  # [B, L, D]; the page is the first n_page tokens of every sequence
        batch, vocab = ids.shape[0], embed.weight.shape[0]
        blended = torch.rand(batch) < cfg.soft_input.fraction
        alpha = torch.empty(batch, n_page, 1).uniform_(cfg.soft_input.alpha_min, 1.0)
        sharpness = torch.empty(batch, 1, 1).uniform_(0.0, cfg.soft_input.sharpness_max)
        other = torch.softmax(sharpness * torch.randn(batch, n_page, vocab), dim=-1) @ embed.weight  # [B, N, D]
        page = torch.where(blended[:, None, None], alpha * embeds[:, :n_page] + (1 - alpha) * other, embeds[:, :n_page])
        logits = llm(inputs_embeds=torch.cat([page, embeds[:, n_page:]], dim=1)).logits[:, :-1]
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * w[:, 1:]).sum() / w[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if step == 0 else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 50 == 0 or step == cfg.soft_input.steps - 1:
            log(f"llm (blended pages) step {step:4d}  loss {loss.item():.4f}")
    llm.eval()
    return loss_avg


def _text_batch(tokenizer, cfg: TinyConfig, rng, suffix: dict):
    """`cfg.llm.batch` freshly generated pages in text form (the three tasks in turn), padded, with weights."""
    seqs = []
    for i in range(cfg.llm.batch):
        task = TASK_NAMES[i % len(TASK_NAMES)]
        doc = sample_docs(task, 1, int(rng.integers(2**31)), cfg.page)[0]
        order = rng.permutation(len(doc.qas))[: cfg.qas_per_sequence]
        seqs.append(
            text_sequence(
                tokenizer, doc, [doc.qas[j] for j in order], suffix[task], cfg.doc_loss_weight, cfg.quote_loss_weight
            )
        )
    return _pad(seqs, tokenizer.pad_token_id)


def _pad(seqs, pad_id: int):
    length = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), length), pad_id)
    w = torch.zeros(len(seqs), length)
    for b, (s, ws) in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        w[b, : len(s)] = torch.tensor(ws)
    return ids, w
