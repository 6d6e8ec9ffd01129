"""Probes on trained runs: how each connector holds up under noise, and what ALIGN's vocabulary
distribution looks like.

- `noise`: Gaussian noise added to the vision tower's output features at evaluation time,
  F' = F + N(0, sigma^2), as in AlignVLM's robustness analysis; sigma is absolute (the paper's sigma = 3) or
  relative to the standard deviation of the clean features. Also the cosine distance between each
  connector's outputs on clean and on noisy features.
- `image`: corruptions a scanner makes (blur, JPEG, downscaling, rotation, pixel noise) applied to the page
  images before the vision tower, so the feature-noise result is checked against realistic noise.
- `vocab`: ALIGN's distribution over the LLM vocabulary averaged over the patches of N pages, and the
  pruning experiment (E_text restricted to the top-k tokens, then re-evaluated).

A probe re-uses the trained weights of existing run directories (found through the leaderboard of
`--output`); it trains only the (connector, task, seed) runs that are missing, through the same `run`
as every other command. The same noise tensor is used for every connector.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .align_kernel import normalised_logits, vocab_pass
from .backbone import PatchBatch
from .checkpoint import has_weights, load_trained
from .errors import AlignBenchError
from .evaluate import EvalConfig, evaluate
from .pipeline import RunConfig, Workspace
from .pipeline import run as run_pipeline
from .results import atomic_write, machine, read_leaderboard, training_runs
from .task import TASKS

SIGMA_MODES = ("absolute", "relative")
VOCAB_PASS_TOKENS = 16384  # patches per streamed pass of the vocabulary probe (its buffers: 3 x this x chunk)

# ---------------------------------------------------------------- finding (or training) the runs


def find_run(output: Path, cfg: RunConfig, backbone_key: str) -> Path | None:
    """The latest run under `output` with this connector, task, training tasks, data seed, stage, steps and
    backbone that saved its weights; None when there is none."""
    board = output / "leaderboard.csv"
    if not board.exists():
        return None
    df = training_runs(read_leaderboard(board))
    want = ((df.connector == cfg.connector) & (df.task == cfg.task) & (df.seed == cfg.data.seed)
            & (df.stage == cfg.train.stage) & (df.steps == cfg.train.steps) & (df.backbone == backbone_key))
    for run_id in reversed(df[want].run_id.tolist()):
        run_dir = output / "runs" / str(run_id)
        if has_weights(run_dir):
            config = json.loads((run_dir / "config.json").read_text())
            trained_on = config.get("train_tasks") or [config["task"]]
            if config.get("connector_args", {}) == cfg.connector_args and trained_on == cfg.train_tasks:
                return run_dir
    return None


@dataclass
class Trained:
    label: str  # connector name
    seed: int
    run_dir: Path
    trained_now: bool
    model: object  # VLM


def trained_models(configs: list[RunConfig], output: Path, ws: Workspace, log=print, progress=None) -> list[Trained]:
    """Load every config's trained model from its run directory, training only what is missing."""
    out = []
    for cfg in configs:
        run_dir = find_run(output, cfg, ws.backbone.key)
        trained_now = run_dir is None
        if trained_now:
            log(f"{cfg.connector} on {cfg.task} (seed {cfg.data.seed}): no trained run under {output}; training it")
            result = run_pipeline(cfg, output, ws, progress=progress, log=log)
            run_dir = Path(result["run_dir"])
        else:
            log(f"{cfg.connector} on {cfg.task} (seed {cfg.data.seed}): re-using {run_dir.name} (no training)")
        model, _ = load_trained(run_dir, ws.backbone, ws.device)
        out.append(Trained(cfg.connector, cfg.data.seed, run_dir, trained_now, model))
    return out


# ---------------------------------------------------------------- feature noise


def gaussian(shape, sigma: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * sigma


@torch.no_grad()
def cosine_drift(model, clean: torch.Tensor, noisy: torch.Tensor, batch: int = 32) -> float:
    """Mean cosine distance (1 - cos) between the connector's outputs on clean and on noisy features."""
    dists = []
    for i in range(0, len(clean), batch):
        a = model.visual_tokens(clean[i : i + batch]).float()
        b = model.visual_tokens(noisy[i : i + batch]).float()
        dists.append((1 - nn.functional.cosine_similarity(a, b, dim=-1)).flatten())
    return torch.cat(dists).mean().item()


def _scores(records: list[dict]) -> list[float]:
    return [r["score"] for r in records]


def noise_probe(trained: list[Trained], task_name: str, ws: Workspace, sigmas: list[float], sigma_mode: str,
                noise_seed: int = 0, drift_images: int = 64, batch_size: int = 64, log=print) -> dict:
    if sigma_mode not in SIGMA_MODES:
        raise AlignBenchError(f"unknown --sigma-mode {sigma_mode!r}; use one of {', '.join(SIGMA_MODES)}")
    if any(s < 0 or not math.isfinite(s) for s in sigmas):
        raise AlignBenchError(f"--sigmas must be finite and non-negative, got {sigmas}")
    task = TASKS.get(task_name)
    out: dict = {"kind": "noise", "task": task_name, "metric": task.metric, "sigma_mode": sigma_mode,
                 "sigmas": sigmas, "noise_seed": noise_seed, "feature_std": {}, "runs": []}
    for t in trained:
        split, feats = ws.split(task, "eval", dataclasses.replace(ws.data_cfg, seed=t.seed))
        std = feats.std().item()
        out["feature_std"][str(t.seed)] = std
        entry = {"connector": t.label, "seed": t.seed, "run": t.run_dir.name, "trained_now": t.trained_now,
                 "scores": {}, "per_sample": {}, "drift": {}, "abs_sigma": {}}
        for k, sigma in enumerate(sigmas):
            abs_sigma = sigma * std if sigma_mode == "relative" else sigma
            noisy = feats + gaussian(feats.shape, abs_sigma, noise_seed * 1000 + k) if abs_sigma > 0 else feats
            result, records = evaluate(t.model, task, split, noisy, EvalConfig(batch_size=batch_size, blind=False),
                                       ws.device)
            key = f"{sigma:g}"
            entry["abs_sigma"][key] = abs_sigma
            entry["scores"][key] = {"score": result["score"], "stderr": result["stderr"], "n": result["n"]}
            entry["per_sample"][key] = _scores(records)
            m = min(drift_images, len(feats))
            entry["drift"][key] = cosine_drift(t.model, feats[:m].to(ws.device), noisy[:m].to(ws.device))
            log(f"  {t.label} seed {t.seed} sigma {key} ({sigma_mode}, absolute {abs_sigma:.3g}): "
                f"{100 * result['score']:.1f}, cosine drift {entry['drift'][key]:.4f}")
        out["runs"].append(entry)
    return out


# ---------------------------------------------------------------- image corruptions

# severity 1..3 for each corruption (pages of the embedded set are 96 x 96 px; real pages are larger, so the
# parameters are relative where that matters)
CORRUPTIONS = {
    "blur": (0.5, 0.8, 1.2),  # Gaussian blur radius, in px per 100 px of page width
    "jpeg": (60, 30, 10),  # JPEG quality
    "downscale": (1.5, 2.0, 3.0),  # shrink by this factor, then back to the original size
    "rotate": (1.0, 2.0, 4.0),  # degrees, white fill
    "pixel": (8.0, 16.0, 32.0),  # Gaussian pixel noise std on the 0-255 scale
}


def corrupt(image, name: str, severity: int, seed: int = 0):
    from PIL import Image, ImageFilter

    if name not in CORRUPTIONS:
        raise AlignBenchError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 3:
        raise AlignBenchError(f"corruption severity must be 1, 2 or 3, got {severity}")
    level = CORRUPTIONS[name][severity - 1]
    image = image.convert("RGB")
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=level * image.width / 100))
    if name == "jpeg":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(level))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if name == "downscale":
        small = image.resize((max(1, round(image.width / level)), max(1, round(image.height / level))),
                             Image.Resampling.BILINEAR)
        return small.resize(image.size, Image.Resampling.BILINEAR)
    if name == "rotate":
        return image.rotate(level, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    arr = np.asarray(image, dtype=np.float32)  # pixel noise
    arr = arr + np.random.default_rng(seed).normal(0, level, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def image_probe(trained: list[Trained], task_name: str, ws: Workspace, corruptions: list[tuple[str, int]],
                batch_size: int = 64, log=print) -> dict:
    task = TASKS.get(task_name)
    out: dict = {"kind": "image", "task": task_name, "metric": task.metric,
                 "corruptions": [f"{n}:{s}" for n, s in corruptions],
                 "levels": {n: CORRUPTIONS[n] for n, _ in corruptions}, "runs": []}
    cache: dict = {}
    for t in trained:
        split, feats = ws.split(task, "eval", dataclasses.replace(ws.data_cfg, seed=t.seed))
        entry = {"connector": t.label, "seed": t.seed, "run": t.run_dir.name, "trained_now": t.trained_now,
                 "scores": {}, "per_sample": {}}
        for name, severity in [("clean", 0), *corruptions]:
            key = "clean" if name == "clean" else f"{name}:{severity}"
            if name == "clean":
                noisy = feats
            else:
                if (t.seed, key) not in cache:
                    images = [corrupt(im, name, severity, seed=i) for i, im in enumerate(split.images)]
                    cache[(t.seed, key)] = ws.backbone.encode_images(images, device=ws.device)
                noisy = cache[(t.seed, key)]
            result, records = evaluate(t.model, task, split, noisy, EvalConfig(batch_size=batch_size, blind=False),
                                       ws.device)
            entry["scores"][key] = {"score": result["score"], "stderr": result["stderr"], "n": result["n"]}
            entry["per_sample"][key] = _scores(records)
            log(f"  {t.label} seed {t.seed} {key}: {100 * result['score']:.1f}")
        out["runs"].append(entry)
    return out


def parse_corruptions(spec: str) -> list[tuple[str, int]]:
    """'blur,jpeg:3' -> [('blur', 2), ('jpeg', 3)] (severity 2 when none is given)."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, sev = item.partition(":")
        if name not in CORRUPTIONS:
            raise AlignBenchError(f"unknown corruption {name!r} in --corruptions; known: {', '.join(CORRUPTIONS)}")
        try:
            severity = int(sev) if sev else 2
        except ValueError:
            raise AlignBenchError(f"corruption severity in {item!r} must be 1, 2 or 3") from None
        if not 1 <= severity <= 3:
            raise AlignBenchError(f"corruption severity in {item!r} must be 1, 2 or 3")
        out.append((name, severity))
    if not out:
        raise AlignBenchError("--corruptions is empty; e.g. --corruptions blur,jpeg,downscale,rotate,pixel")
    return out


# ---------------------------------------------------------------- ALIGN's vocabulary distribution


def _align_queries(connector, features: torch.Tensor) -> torch.Tensor:
    return connector.ln1(connector.w1(features))  # [B, N, D]: ALIGN's queries, before W2 and LN2


def _align_args(connector) -> tuple:
    """W2, b2, LN2's gain, bias and eps, and the chunk size: the arguments of the streamed ALIGN functions."""
    chunk = getattr(connector.config, "chunk_size", 4096)
    return (connector.w2.weight, connector.w2.bias, connector.ln2.weight, connector.ln2.bias, connector.ln2.eps,
            chunk)


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
        w2, b2, gain, bias, eps, chunk = _align_args(self.inner)
        logits = normalised_logits(_align_queries(self.inner, features), w2, b2, gain, bias, eps, self.keep,
                                   chunk)  # [B, N, k]
        e_text = self.inner._text_embeddings.weight[self.keep]  # [k, D]
        return torch.softmax(logits.float(), dim=-1).to(e_text.dtype) @ e_text


def _page_cell_ids(ws: Workspace, task_name: str, split, tok) -> tuple[list[list[int]], int] | None:
    """The token each cell of each evaluation page of the embedded set stands for (glyph pages: its character;
    token pages: its token, `embedded.tokens.cell_ids`) and the id of a blank cell, when the pages can be
    regenerated exactly (checked on the first page's pixels); None otherwise (e.g. real datasets)."""
    from .data import embedded_seed
    from .embedded import PageSpec, render, sample_docs

    renderer = ws.backbone.info.get("renderer")
    if ws.data_cfg.source != "embedded" or ("page" not in ws.backbone.info and renderer is None):
        return None
    cfg = ws.data_cfg
    docs = sample_docs(task_name, cfg.eval_questions, embedded_seed(task_name, "eval", cfg.seed),
                       PageSpec(**ws.backbone.info.get("page", {})))
    draw = renderer if renderer is not None else (lambda d: render(d.page))
    if len(docs) != len(split.images):
        return None
    if not np.array_equal(np.asarray(draw(docs[0]).convert("RGB")), np.asarray(split.images[0])):
        return None
    if renderer is not None:
        from .embedded.tokens import BLANK, cell_ids

        return [cell_ids(renderer.cells(d), tok) for d in docs], cell_ids([BLANK], tok)[0]
    return [tok.convert_tokens_to_ids(list(d.page.text())) for d in docs], tok.convert_tokens_to_ids(" ")


@torch.no_grad()
def vocab_probe(run_dir: Path, ws: Workspace, docs: int = 100, top_ks: list[int] | None = None,
                batch_size: int = 64, log=print) -> dict:
    model, config = load_trained(run_dir, ws.backbone, ws.device)
    connector = model.connector
    if not all(hasattr(connector, a) for a in ("w1", "ln1", "w2", "ln2", "_text_embeddings")):
        raise AlignBenchError(f"{run_dir} is a {config['connector']!r} run; the vocabulary probe needs an "
                              "ALIGN run (a softmax over the LLM vocabulary)")
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
    w2, b2, gain, bias, eps, chunk = _align_args(connector)
    step = max(1, VOCAB_PASS_TOKENS // ws.backbone.max_patches)  # pages per pass
    for i in range(0, n, step):
        batch = feats[i : min(i + step, n)]
        groups = [g for _, g in batch.groups()] if isinstance(batch, PatchBatch) else [batch]
        if len(groups) > 1:
            ids = None  # pages the glyph check can read are never tiled; no per-page layout to compare with
        for g in groups:
            queries = _align_queries(connector, g.to(ws.device))  # [b, N, D]
            targets = ids[i : i + step] if ids is not None else None
            part = vocab_pass(queries, w2, b2, gain, bias, eps, chunk, targets=targets)
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
        "kind": "vocab", "run": run_dir.name, "connector": config["connector"], "task": task.name, "docs": n,
        "patches": patches, "vocab_size": vocab,
        "averaged": {"max_prob": avg.max().item(), "entropy": entropy, "entropy_over_log_v": entropy / math.log(vocab),
                     "tokens_above_1e-6": int((avg > 1e-6).sum()), "top_tokens": top},
        "per_patch": {"mean_top_prob": top_prob.mean().item(), "mean_entropy": patch_entropy.mean().item()},
    }
    if ids is not None:  # embedded pages: does the top token name the glyph in its cell?
        ids = ids.flatten()  # [n * N], the order of top_id
        ink = ids != blank
        hit = top_id == ids
        true_prob = torch.cat(target_prob)
        out["reading"] = {"top_token_is_cell_glyph": hit[ink].float().mean().item(),
                          "top_token_is_blank_on_blank_cells": hit[~ink].float().mean().item(),
                          "mean_prob_of_cell_glyph": true_prob[ink].mean().item(), "ink_cells": int(ink.sum())}
    log(f"averaged over {patches} patches of {n} pages: max prob {avg.max().item():.4f}, entropy "
        f"{entropy:.3f} nats, {out['averaged']['tokens_above_1e-6']} of {vocab} tokens above 1e-6")
    pruning = []
    base_cfg = EvalConfig(batch_size=batch_size, blind=False)
    full, records = evaluate(model, task, split, feats, base_cfg, ws.device)
    pruning.append({"k": vocab, "score": full["score"], "stderr": full["stderr"], "n": full["n"],
                    "per_sample": _scores(records)})
    for k in sorted({k for k in (top_ks or []) if 0 < k < vocab}, reverse=True):
        original = model.connector
        model.connector = PrunedAlign(original, order[:k].clone().to(ws.device))
        try:
            result, records = evaluate(model, task, split, feats, base_cfg, ws.device)
        finally:
            model.connector = original
        pruning.append({"k": k, "score": result["score"], "stderr": result["stderr"], "n": result["n"],
                        "per_sample": _scores(records)})
        log(f"  top-{k} tokens: {100 * result['score']:.1f} (full vocabulary {100 * full['score']:.1f})")
    out["pruning"] = pruning
    return out


# ---------------------------------------------------------------- writing a probe


def new_probe_dir(output: Path, kind: str, task: str) -> Path:
    import secrets

    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = output / "probes" / f"{kind}-{task}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue


def summary_rows(probe: dict) -> list[dict]:
    """One row per connector (mean over seeds) per condition: the table under a noise or image probe."""
    import pandas as pd

    rows = []
    for r in probe["runs"]:
        for key, s in r["scores"].items():
            rows.append({"connector": r["connector"], "seed": r["seed"], "condition": key, "score": s["score"],
                         "stderr": s["stderr"], "drift": r.get("drift", {}).get(key)})
    df = pd.DataFrame(rows)
    agg = df.groupby(["connector", "condition"], sort=False).agg(
        score=("score", "mean"), seed_std=("score", "std"), stderr=("stderr", "mean"), drift=("drift", "mean"),
        seeds=("seed", "nunique")).reset_index()
    return agg.to_dict("records")


def probe_markdown(probe: dict) -> str:
    """Paper Table 5 layout: clean score, score under each condition, drop at the strongest, per connector."""
    rows = summary_rows(probe)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    clean_key = "0" if probe["kind"] == "noise" else "clean"
    worst = conditions[-1]
    by = {(r["connector"], r["condition"]): r for r in rows}
    connectors = list(dict.fromkeys(r["connector"] for r in rows))
    label = (lambda c: f"σ={c}") if probe["kind"] == "noise" else (lambda c: c)
    noise = probe["kind"] == "noise"
    head = ["connector", *[label(c) for c in conditions], f"drop ({label(worst)})" if noise else "mean drop"]
    if noise:
        head.append(f"cosine drift ({label(worst)})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in connectors:
        cells = [c]
        for cond in conditions:
            r = by.get((c, cond))
            cells.append("–" if r is None else f"{100 * r['score']:.1f} ± {100 * r['stderr']:.1f}")
        clean, last = by.get((c, clean_key)), by.get((c, worst))
        others = [by[(c, k)]["score"] for k in conditions if k != clean_key and (c, k) in by]
        if clean is None or not others:
            cells.append("–")
        elif noise:
            cells.append(f"{100 * (clean['score'] - last['score']):+.1f}")
        else:
            cells.append(f"{100 * (clean['score'] - sum(others) / len(others)):+.1f}")
        if noise:
            cells.append("–" if last is None or last["drift"] is None else f"{last['drift']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in probe["runs"]})
    note = f"{probe['metric']} in points, mean ± stderr over {len(seeds)} seed(s) {seeds}"
    if probe["kind"] == "noise":
        note += f"; σ {probe['sigma_mode']}"
        if probe["sigma_mode"] == "relative":
            note += " (multiples of the clean features' standard deviation)"
    return f"{note}\n\n" + "\n".join(lines) + "\n"


def plot(probe: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(probe)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in dict.fromkeys(r["connector"] for r in rows):
        mine = {r["condition"]: r for r in rows if r["connector"] == c}
        xs = [k for k in conditions if k in mine]
        ys = [100 * mine[k]["score"] for k in xs]
        es = [1.96 * 100 * mine[k]["stderr"] for k in xs]
        if probe["kind"] == "noise":
            ax.errorbar([float(x) for x in xs], ys, yerr=es, marker="o", capsize=3, label=c)
        else:
            ax.errorbar(range(len(xs)), ys, yerr=es, marker="o", capsize=3, label=c)
    if probe["kind"] == "noise":
        ax.set_xlabel(f"σ ({probe['sigma_mode']})")
    else:
        ax.set_xticks(range(len(conditions)), conditions, rotation=30)
    ax.set_ylabel(f"{probe['metric']} (points, ±95% CI)")
    ax.set_title(f"{probe['kind']} probe on {probe['task']}")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def vocab_markdown(probe: dict) -> str:
    a, p = probe["averaged"], probe["per_patch"]
    lines = [f"ALIGN run `{probe['run']}` on {probe['task']}: distribution over the {probe['vocab_size']}-token "
             f"vocabulary averaged over {probe['patches']} patches of {probe['docs']} pages.", "",
             "| statistic | value |", "|---|---|",
             f"| largest single-token probability (averaged) | {a['max_prob']:.4f} |",
             f"| entropy of the averaged distribution (nats) | {a['entropy']:.3f} "
             f"({a['entropy_over_log_v']:.2f} of log V) |",
             f"| tokens above 1e-6 | {a['tokens_above_1e-6']} of {probe['vocab_size']} |",
             f"| per-patch mean top probability | {p['mean_top_prob']:.3f} |",
             f"| per-patch mean entropy (nats) | {p['mean_entropy']:.3f} |"]
    if "reading" in probe:
        r = probe["reading"]
        lines += [f"| top token = the glyph in the cell (ink cells) | {100 * r['top_token_is_cell_glyph']:.1f} % |",
                  f"| mean probability of the cell's glyph (ink cells) | {r['mean_prob_of_cell_glyph']:.3f} |"]
    lines += ["", "Top tokens: " + ", ".join(f"`{t['token']!s}` {t['prob']:.3f}" for t in a["top_tokens"][:10]), "",
              "| tokens kept (top-k) | score |", "|---|---|"]
    for row in probe["pruning"]:
        lines.append(f"| {row['k']} | {100 * row['score']:.1f} ± {100 * row['stderr']:.1f} |")
    return "\n".join(lines) + "\n"


def write_probe(output: Path, probe: dict, command: str, seconds: float) -> Path:
    probe = {**probe, "command": command, "wall_seconds": round(seconds, 1), "machine": machine()}
    d = new_probe_dir(output, probe["kind"], probe["task"])
    if probe["kind"] == "vocab":
        atomic_write(d / "table.md", vocab_markdown(probe))
    else:
        atomic_write(d / "table.md", probe_markdown(probe))
        import pandas as pd

        atomic_write(d / "table.csv", pd.DataFrame(summary_rows(probe)).to_csv(index=False))
        plot(probe, d / "plot.png")
    atomic_write(d / "probe.json", json.dumps(probe, indent=1))
    return d


def latest_probes(output: Path) -> dict[tuple[str, str], dict]:
    """The newest probe of each (kind, task) under `output/probes`."""
    found: dict[tuple[str, str], dict] = {}
    for path in sorted((output / "probes").glob("*/probe.json")):
        try:
            p = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        p["dir"] = str(path.parent)
        found[(p["kind"], p["task"])] = p  # sorted by name = by time stamp: the last wins
    return found
