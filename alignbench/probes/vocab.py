"""The vocabulary probe: ALIGN's distribution over the LLM vocabulary averaged over the patches of N pages, and the
pruning experiment (E_text restricted to the top-k tokens, then re-evaluated)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..align_kernel import VocabHead, normalised_logits, vocab_pass
from ..backbones.base import PatchBatch
from ..config.eval import EvalConfig
from ..data.embedded.dataset import embedded_docs
from ..data.embedded.page import PageSpec, render
from ..data.embedded.tokens import BLANK, cell_ids
from ..errors import AlignBenchError
from ..evaluate import evaluate
from ..model.checkpoint import load_trained
from ..run.workspace import Workspace
from ..task import TASKS
from .common import scores_of

VOCAB_PASS_TOKENS = 16384  # patches per streamed pass of the vocabulary probe (its buffers: 3 x this x chunk)


def _align_queries(connector, features: torch.Tensor) -> torch.Tensor:
    return connector.ln1(connector.w1(features))  # [B, N, D]: ALIGN's queries, before W2 and LN2


def _align_args(connector) -> tuple[VocabHead, int]:
    """ALIGN's map onto the vocabulary and its chunk size: the arguments of the streamed ALIGN functions."""
    return VocabHead.of(connector.w2, connector.ln2), getattr(connector.config, "chunk_size", 4096)


class PrunedAlign(nn.Module):
    """ALIGN with its softmax (and so E_text) restricted to `keep` token ids: the pruning experiment. LN2 still
    normalises over the whole vocabulary (its mean and variance come from the streamed statistics), and only
    the kept tokens' logits are computed."""

    def __init__(self, connector, keep: torch.Tensor):
        super().__init__()
        self.inner = connector
        self.name = connector.name
        self.register_buffer("keep", keep)

    def num_tokens(self, num_patches: int) -> int:
        return self.inner.num_tokens(num_patches)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        head, chunk = _align_args(self.inner)
        logits = normalised_logits(_align_queries(self.inner, features), head, self.keep, chunk)  # [B, N, k]
        e_text = self.inner._text_embeddings.weight[self.keep]  # [k, D]
        return torch.softmax(logits.float(), dim=-1).to(e_text.dtype) @ e_text


def _page_cell_ids(ws: Workspace, task_name: str, split, tok) -> tuple[list[list[int]], int] | None:
    """The token each cell of each evaluation page of the embedded set stands for (glyph pages: its character;
    token pages: its token, `data.embedded.tokens.cell_ids`) and the id of a blank cell, when the pages can be
    regenerated exactly (checked on the first page's pixels); None otherwise (e.g. real datasets)."""
    renderer = ws.backbone.renderer
    if ws.data_cfg.source != "embedded" or (ws.backbone.page is None and renderer is None):
        return None
    docs = embedded_docs(task_name, "eval", ws.data_cfg, ws.backbone.page or PageSpec())
    draw = renderer if renderer is not None else (lambda d: render(d.page))
    if len(docs) != len(split.images):
        return None
    if not np.array_equal(np.asarray(draw(docs[0]).convert("RGB")), np.asarray(split.images[0])):
        return None
    if renderer is not None:
        return [cell_ids(renderer.cells(d), tok) for d in docs], cell_ids([BLANK], tok)[0]
    return [tok.convert_tokens_to_ids(list(d.page.text())) for d in docs], tok.convert_tokens_to_ids(" ")


@torch.no_grad()
def vocab_probe(
    run_dir: Path, ws: Workspace, docs: int = 100, top_ks: list[int] | None = None, batch_size: int = 64, log=print
) -> dict:
    model, config = load_trained(run_dir, ws.backbone, ws.device)
    connector = model.connector
    if not all(hasattr(connector, a) for a in ("w1", "ln1", "w2", "ln2", "_text_embeddings")):
        raise AlignBenchError(
            f"{run_dir} is a {config['connector']!r} run; the vocabulary probe needs an "
            "ALIGN run (a softmax over the LLM vocabulary)"
        )
    task = TASKS.get(config["task"])
    split, feats = ws.split(task, "eval")
    n = min(docs, len(split.images))
    tok = ws.backbone.tokenizer
    cells = _page_cell_ids(ws, task.name, split, tok)
    ids = torch.tensor(cells[0][:n]) if cells is not None else None  # [n, N]: the token each cell stands for
    blank = cells[1] if cells is not None else None
    # The vocabulary distribution of every patch, streamed: pages in batches, the vocabulary in chunks, so no
    # [patches, V] matrix is ever made (at paper scale, 100 pages of 6,561 patches x 128,256 tokens: 336 GB).
    # Tiled pages with different grids (a PatchBatch): every real patch of every tile, group by group.
    prob_sum, top_prob, top_id, patch_entropy, target_prob = None, [], [], [], []
    head, chunk = _align_args(connector)
    step = max(1, VOCAB_PASS_TOKENS // ws.backbone.max_patches)  # pages per pass
    for i in range(0, n, step):
        batch = feats[i : min(i + step, n)]
        groups = [g for _, g in batch.groups()] if isinstance(batch, PatchBatch) else [batch]
        if len(groups) > 1:
            ids = None  # pages the glyph check can read are never tiled; no per-page layout to compare with
        for g in groups:
            queries = _align_queries(connector, g.to(ws.device))  # [b, N, D]
            targets = ids[i : i + step] if ids is not None else None
            part = vocab_pass(queries, head, chunk, targets=targets)
            prob_sum = part["prob_sum"] if prob_sum is None else prob_sum + part["prob_sum"]
            top_prob.append(part["top_prob"].flatten().cpu())
            top_id.append(part["top_id"].flatten().cpu())
            patch_entropy.append(part["entropy"].flatten().cpu())
            if targets is not None:
                target_prob.append(part["target_prob"].flatten().cpu())
    top_prob, top_id, patch_entropy = torch.cat(top_prob), torch.cat(top_id), torch.cat(patch_entropy)  # [patches]
    patches = top_prob.numel()
    avg = (prob_sum / patches).cpu()  # [V], the distribution averaged over every patch
    vocab = avg.numel()
    entropy = -(avg * avg.clamp_min(1e-30).log()).sum().item()
    order = torch.argsort(avg, descending=True)
    top = [{"id": int(i), "token": tok.convert_ids_to_tokens(int(i)), "prob": avg[i].item()} for i in order[:20]]
    out: dict = {
        "kind": "vocab",
        "run": run_dir.name,
        "connector": config["connector"],
        "task": task.name,
        "docs": n,
        "patches": patches,
        "vocab_size": vocab,
        "averaged": {
            "max_prob": avg.max().item(),
            "entropy": entropy,
            "entropy_over_log_v": entropy / math.log(vocab),
            "tokens_above_1e-6": int((avg > 1e-6).sum()),
            "top_tokens": top,
        },
        "per_patch": {"mean_top_prob": top_prob.mean().item(), "mean_entropy": patch_entropy.mean().item()},
    }
    if ids is not None:  # embedded pages: does the top token name the glyph in its cell?
        ids = ids.flatten()  # [n * N], the order of top_id
        ink = ids != blank
        hit = top_id == ids
        true_prob = torch.cat(target_prob)
        out["reading"] = {
            "top_token_is_cell_glyph": hit[ink].float().mean().item(),
            "top_token_is_blank_on_blank_cells": hit[~ink].float().mean().item(),
            "mean_prob_of_cell_glyph": true_prob[ink].mean().item(),
            "ink_cells": int(ink.sum()),
        }
    log(
        f"averaged over {patches} patches of {n} pages: max prob {avg.max().item():.4f}, entropy "
        f"{entropy:.3f} nats, {out['averaged']['tokens_above_1e-6']} of {vocab} tokens above 1e-6"
    )
    pruning = []
    base_cfg = EvalConfig(batch_size=batch_size, blind=False)
    full, records = evaluate(model, task, split, feats, base_cfg, ws.device)
    pruning.append(
        {"k": vocab, "score": full["score"], "stderr": full["stderr"], "n": full["n"], "per_sample": scores_of(records)}
    )
    for k in sorted({k for k in (top_ks or []) if 0 < k < vocab}, reverse=True):
        original = model.connector
        model.connector = PrunedAlign(original, order[:k].clone().to(ws.device))
        try:
            result, records = evaluate(model, task, split, feats, base_cfg, ws.device)
        finally:
            model.connector = original
        pruning.append(
            {
                "k": k,
                "score": result["score"],
                "stderr": result["stderr"],
                "n": result["n"],
                "per_sample": scores_of(records),
            }
        )
        log(f"  top-{k} tokens: {100 * result['score']:.1f} (full vocabulary {100 * full['score']:.1f})")
    out["pruning"] = pruning
    return out
