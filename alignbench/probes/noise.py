"""The feature-noise probe: Gaussian noise added to the vision tower's output features at evaluation time,
F' = F + N(0, sigma^2), as in AlignVLM's robustness analysis; sigma is absolute (the paper's sigma = 3) or relative
to the standard deviation of the clean features. Also the cosine distance between each connector's outputs on
clean and on noisy features."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..config.eval import EvalConfig
from ..errors import AlignBenchError
from ..evaluate import evaluate
from ..run.workspace import Workspace
from .common import Trained, probe_record, run_entry, scores_of

SIGMA_MODES = ("absolute", "relative")


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


def noise_probe(
    trained: list[Trained],
    task_name: str,
    ws: Workspace,
    sigmas: list[float],
    sigma_mode: str,
    noise_seed: int = 0,
    drift_images: int = 64,
    scoring: EvalConfig | None = None,
    log=print,
) -> dict:
    if sigma_mode not in SIGMA_MODES:
        raise AlignBenchError(f"unknown --sigma-mode {sigma_mode!r}; use one of {', '.join(SIGMA_MODES)}")
    if any(s < 0 or not math.isfinite(s) for s in sigmas):
        raise AlignBenchError(f"--sigmas must be finite and non-negative, got {sigmas}")
    task, scoring, out = probe_record(
        "noise", task_name, scoring, sigma_mode=sigma_mode, sigmas=sigmas, noise_seed=noise_seed, feature_std={}
    )
    for t in trained:
        split, feats = ws.split(task, "eval", dataclasses.replace(ws.data_cfg, seed=t.seed))
        std = feats.std().item()
        out["feature_std"][str(t.seed)] = std
        entry = run_entry(t, drift={}, abs_sigma={})
        for k, sigma in enumerate(sigmas):
            abs_sigma = sigma * std if sigma_mode == "relative" else sigma
            noisy = feats + gaussian(feats.shape, abs_sigma, noise_seed * 1000 + k) if abs_sigma > 0 else feats
            result, records = evaluate(t.model, task, split, noisy, scoring, ws.device)
            key = f"{sigma:g}"
            entry["abs_sigma"][key] = abs_sigma
            out["eval_dtype"] = result["eval_dtype"]  # the LLM's precision while scoring
            entry["scores"][key] = {"score": result["score"], "stderr": result["stderr"], "n": result["n"]}
            entry["per_sample"][key] = scores_of(records)
            m = min(drift_images, len(feats))
            entry["drift"][key] = cosine_drift(t.model, feats[:m].to(ws.device), noisy[:m].to(ws.device))
            log(
                f"  {t.label} seed {t.seed} sigma {key} ({sigma_mode}, absolute {abs_sigma:.3g}): "
                f"{100 * result['score']:.1f}, cosine drift {entry['drift'][key]:.4f}"
            )
        out["runs"].append(entry)
    return out
