"""The embedded default backbone (`--backbone tiny`): a small SigLIP vision tower and a small Llama,
built from transformers configs, with a character-level tokenizer made offline, and *pretrained*:

1. the vision tower on glyph recognition: a linear head classifies every patch of rendered pages
   (glyph, blank or drawing); the head is thrown away afterwards. Patch-level recognition is what any
   connector needs and gives none of them the answer format;
2. the language model on the text form of the three tasks: a page's characters (row-major, one per
   cell), then its questions and answers. A connector that maps patch i to the character in cell i
   therefore hands the LLM exactly what it learned to read.

Prepared weights are cached under a content key (a hash of `TinyConfig` and `FORMAT_VERSION`); the
package ships the weights that `alignbench prepare` produced, with the command, config and file
hashes in `manifest.json`, so a fresh machine needs no preparation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbone import Backbone, glyph_transform
from .embedded import CELL_CLASSES, PageSpec, cell_labels, render, sample_docs

# Bump when the page generators or the text format change: it invalidates prepared weights.
FORMAT_VERSION = "3"
ASSETS = Path(__file__).parent / "assets" / "tiny"
TASK_NAMES = ("docvqa", "infovqa", "chartqa")


@dataclass
class TinyConfig:
    rows: int = 12
    cols: int = 12
    cell: int = 8  # = patch size
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 256
    llm_hidden: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    llm_mlp: int = 384
    vision_steps: int = 400
    vision_batch: int = 32
    vision_lr: float = 2e-3
    vision_pool: int = 600  # rendered pages per task for glyph pretraining
    llm_steps: int = 1800
    llm_batch: int = 32
    llm_lr: float = 3e-3
    doc_loss_weight: float = 0.1  # next-token loss on page text and questions (answers weigh 1)
    quote_loss_weight: float = 0.5  # next-token loss on the page quoted after its questions
    qas_per_sequence: int = 4
    seed: int = 0
    # Stage 2: reading blended inputs. Half the sequences have every page token's embedding replaced by
    # alpha * e_token + (1 - alpha) * (p . E) with alpha ~ U(alpha_min, 1) per token and p a random softmax:
    # the convex combinations of token embeddings that a softmax connector hands the LLM before its
    # distribution is sharp. Large LLMs read such inputs (AlignVLM's premise); a model this small, trained
    # on exact tokens only, stops reading below about 60 % weight on the right token
    # (benchmarks/soft_input_tolerance.py). 0 steps = no stage 2.
    soft_input_steps: int = 300
    soft_input_lr: float = 1e-3
    soft_input_fraction: float = 0.5  # share of sequences whose page is blended
    soft_input_alpha_min: float = 0.2
    soft_input_sharpness_max: float = 3.0  # p = softmax(s * N(0, 1)) with s ~ U(0, this) per sequence

    @property
    def page(self) -> PageSpec:
        return PageSpec(rows=self.rows, cols=self.cols, cell=self.cell)

    def key(self) -> str:
        fields = asdict(self)
        if self.soft_input_steps == 0:  # without stage 2 the stage-2 settings do not change the weights
            fields = {k: v for k, v in fields.items() if not k.startswith("soft_input_")}
        blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def stage1(self) -> TinyConfig:
        """The same backbone before stage 2 (its weights are stage 2's starting point, cached on their own)."""
        return dataclasses.replace(self, soft_input_steps=0)


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNBENCH_CACHE", Path.home() / ".cache" / "alignbench"))


# ---------------------------------------------------------------- tokenizer


def make_tokenizer():
    """Character-level tokenizer over printable ASCII, newline and the drawing glyph, plus the tasks'
    two fixed prompt suffixes as single tokens (they follow every question)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from .task import TASKS

    chars = [chr(c) for c in range(32, 127)] + ["\n", CELL_CLASSES[-1]]
    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    # BPE with no merges = one token per character; unknown characters map to <unk>.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # characters join without separators
    suffixes = sorted({TASKS.get(t).prompt_suffix for t in TASK_NAMES})
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.add_tokens(suffixes)
    return fast


def page_ids(tokenizer, page_text: str) -> list[int]:
    """One token per cell, whatever the tokenizer would merge."""
    return tokenizer.convert_tokens_to_ids(list(page_text))


# ---------------------------------------------------------------- models


def build_models(cfg: TinyConfig, vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    side = cfg.rows * cfg.cell
    assert cfg.rows == cfg.cols, "the SigLIP tower takes square pages"
    vision = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_mlp, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads, image_size=side, patch_size=cfg.cell, num_channels=3))
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.llm_hidden, intermediate_size=cfg.llm_mlp,
        num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads, num_key_value_heads=cfg.llm_heads,
        max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=None))
    return vision, llm


# ---------------------------------------------------------------- pretraining


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain_vision(vision, cfg: TinyConfig, log=print) -> float:
    """Glyph recognition: classify each patch's cell (a glyph, blank, or a drawing)."""
    torch.manual_seed(cfg.seed)
    pages = [d.page for t in TASK_NAMES for d in sample_docs(t, cfg.vision_pool, cfg.seed + 101)]
    pixels = glyph_transform([render(p) for p in pages])  # [P, 3, H, W]
    labels = torch.tensor([cell_labels(p) for p in pages])  # [P, N]
    head = nn.Linear(cfg.vision_hidden, len(CELL_CLASSES))
    params = list(vision.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed)
    vision.train()
    acc = 0.0
    for step in range(cfg.vision_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.vision_lr * _cosine(step, cfg.vision_steps, 20)
        idx = torch.randint(len(pages), (cfg.vision_batch,), generator=gen)
        logits = head(vision(pixel_values=pixels[idx]).last_hidden_state)  # [B, N, C]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels[idx].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc = 0.9 * acc + 0.1 * (logits.argmax(-1) == labels[idx]).float().mean().item()
        if step % 50 == 0 or step == cfg.vision_steps - 1:
            log(f"vision step {step:4d}  loss {loss.item():.4f}  cell accuracy {acc:.3f}")
    vision.eval()
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
    from .task import TASKS

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 202)
    suffix = {t: TASKS.get(t).prompt_suffix for t in TASK_NAMES}
    opt = torch.optim.AdamW(llm.parameters(), lr=cfg.llm_lr, weight_decay=0.01, betas=(0.9, 0.98))
    llm.train()
    answer_acc = 0.0
    for step in range(cfg.llm_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.llm_lr * _cosine(step, cfg.llm_steps, 100)
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
        if step % 100 == 0 or step == cfg.llm_steps - 1:
            log(f"llm step {step:5d}  loss {loss.item():.4f}  answer-token accuracy {answer_acc:.3f}")
    llm.eval()
    return answer_acc


def pretrain_llm_soft(llm, tokenizer, cfg: TinyConfig, log=print) -> float:
    """Stage 2: the stage-1 objective, with the page tokens of some sequences blended (see `TinyConfig`)."""
    from .task import TASKS

    torch.manual_seed(cfg.seed + 303)
    rng = np.random.default_rng(cfg.seed + 303)
    suffix = {t: TASKS.get(t).prompt_suffix for t in TASK_NAMES}
    embed = llm.get_input_embeddings()
    n_page = cfg.rows * cfg.cols
    opt = torch.optim.AdamW(llm.parameters(), lr=cfg.soft_input_lr, weight_decay=0.01, betas=(0.9, 0.98))
    llm.train()
    loss_avg = float("nan")
    for step in range(cfg.soft_input_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.soft_input_lr * _cosine(step, cfg.soft_input_steps, 30)
        ids, w = _text_batch(tokenizer, cfg, rng, suffix)
        embeds = embed(ids)  # [B, L, D]; the page is the first n_page tokens of every sequence
        batch, vocab = ids.shape[0], embed.weight.shape[0]
        blended = torch.rand(batch) < cfg.soft_input_fraction
        alpha = torch.empty(batch, n_page, 1).uniform_(cfg.soft_input_alpha_min, 1.0)
        sharpness = torch.empty(batch, 1, 1).uniform_(0.0, cfg.soft_input_sharpness_max)
        other = torch.softmax(sharpness * torch.randn(batch, n_page, vocab), dim=-1) @ embed.weight  # [B, N, D]
        page = torch.where(blended[:, None, None], alpha * embeds[:, :n_page] + (1 - alpha) * other,
                           embeds[:, :n_page])
        logits = llm(inputs_embeds=torch.cat([page, embeds[:, n_page:]], dim=1)).logits[:, :-1]
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * w[:, 1:]).sum() / w[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if step == 0 else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 50 == 0 or step == cfg.soft_input_steps - 1:
            log(f"llm (blended pages) step {step:4d}  loss {loss.item():.4f}")
    llm.eval()
    return loss_avg


def _text_batch(tokenizer, cfg: TinyConfig, rng, suffix: dict):
    """`cfg.llm_batch` freshly generated pages in text form (the three tasks in turn), padded, with weights."""
    seqs = []
    for i in range(cfg.llm_batch):
        task = TASK_NAMES[i % len(TASK_NAMES)]
        doc = sample_docs(task, 1, int(rng.integers(2**31)), cfg.page)[0]
        order = rng.permutation(len(doc.qas))[: cfg.qas_per_sequence]
        seqs.append(text_sequence(tokenizer, doc, [doc.qas[j] for j in order], suffix[task], cfg.doc_loss_weight,
                                  cfg.quote_loss_weight))
    return _pad(seqs, tokenizer.pad_token_id)


def _pad(seqs, pad_id: int):
    length = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), length), pad_id)
    w = torch.zeros(len(seqs), length)
    for b, (s, ws) in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        w[b, : len(s)] = torch.tensor(ws)
    return ids, w


def prepare(cfg: TinyConfig, out_dir: Path, log=print, command: str = "alignbench prepare") -> Path:
    """Build and pretrain the tiny backbone; write it (safetensors + JSON) to `out_dir`.

    Stage 1 (vision tower, then LLM on exact text) is itself a cached backbone (`cfg.stage1()`), reused when
    it is shipped or cached; stage 2 (blended pages) continues from it."""
    t0 = time.time()
    extra: dict = {}
    if cfg.soft_input_steps > 0:
        base_cfg = cfg.stage1()
        base = locate(base_cfg)
        if base is None:
            log(f"stage 1 ({base_cfg.key()}) is not prepared yet; preparing it first")
            base = prepare(base_cfg, cache_root() / "backbones" / f"tiny-{base_cfg.key()}", log, command)
        else:
            log(f"stage 1: re-using prepared weights {base_cfg.key()} from {base}")
        from transformers import AutoTokenizer, LlamaForCausalLM, SiglipVisionModel

        vision = SiglipVisionModel.from_pretrained(base / "vision", local_files_only=True)
        llm = LlamaForCausalLM.from_pretrained(base / "llm", local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(base / "tokenizer", local_files_only=True)
        base_manifest = json.loads((base / "manifest.json").read_text())
        vision_acc, llm_acc = base_manifest["vision_cell_accuracy"], base_manifest["llm_answer_token_accuracy"]
        soft_loss = pretrain_llm_soft(llm, tokenizer, cfg, log)
        extra = {"stage1": {"key": base_cfg.key(), "seconds": base_manifest["seconds"],
                            "command": base_manifest["command"]},
                 "stage2_final_loss": round(soft_loss, 4)}
    else:
        tokenizer = make_tokenizer()
        vision, llm = build_models(cfg, len(tokenizer))
        log(f"preparing tiny backbone {cfg.key()}: vision {sum(p.numel() for p in vision.parameters()):,} "
            f"params, llm {sum(p.numel() for p in llm.parameters()):,} params")
        vision_acc = pretrain_vision(vision, cfg, log)
        llm_acc = pretrain_llm(llm, tokenizer, cfg, log)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    vision.save_pretrained(tmp / "vision")
    llm.save_pretrained(tmp / "llm")
    tokenizer.save_pretrained(tmp / "tokenizer")
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "key": cfg.key(), "format_version": FORMAT_VERSION, "config": asdict(cfg), "command": command,
        "seconds": round(time.time() - t0, 1), "vision_cell_accuracy": round(vision_acc, 4),
        "llm_answer_token_accuracy": round(llm_acc, 4), **extra, "torch": torch.__version__,
        "sha256": {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)  # atomic: a killed preparation never leaves a half-written cache entry
    log(f"prepared in {manifest['seconds']} s -> {out_dir}")
    return out_dir


def _valid(path: Path, key: str) -> bool:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key:
        return False
    return all((path / name).is_file() and hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
               for name, digest in manifest["sha256"].items())


def locate(cfg: TinyConfig) -> Path | None:
    """The shipped weights, else the user cache, if either holds this exact content key."""
    key = cfg.key()
    for path in (ASSETS, cache_root() / "backbones" / f"tiny-{key}"):
        if _valid(path, key):
            return path
    return None


def load_tiny(cfg: TinyConfig | None = None, progress=None, log=print) -> Backbone:
    from transformers import AutoTokenizer, LlamaForCausalLM, SiglipVisionModel

    cfg = cfg or TinyConfig()
    path = locate(cfg)
    if path is None:
        log("no prepared tiny backbone for this configuration; preparing it once (cached for later runs)")
        path = prepare(cfg, cache_root() / "backbones" / f"tiny-{cfg.key()}", log=log)
    vision = SiglipVisionModel.from_pretrained(path / "vision", local_files_only=True)
    llm = LlamaForCausalLM.from_pretrained(path / "llm", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    side = cfg.rows * cfg.cell
    info = {"num_patches": cfg.rows * cfg.cols, "grid": (cfg.rows, cfg.cols), "vision_dim": cfg.vision_hidden,
            "image_size": (side, side),
            "page": dataclasses.asdict(cfg.page), "path": str(path)}
    return Backbone(vision, llm, tokenizer, functools.partial(glyph_transform, size=(side, side)),
                    key=f"tiny-{cfg.key()}", info=info)
