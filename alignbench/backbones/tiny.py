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

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.embedded.page import CELL_CLASSES, PageSpec
from ..task import TASKS
from .base import Backbone, glyph_transform
from .prepared import cache_root, publish_prepared, staging, verified
from .spec import Net, flat, replace_flat
from .tiny_pretrain import TASK_NAMES, pretrain_llm, pretrain_llm_soft, pretrain_vision

# Bump when the page generators or the text format change: it invalidates prepared weights.
FORMAT_VERSION = "3"
ASSETS = Path(__file__).parents[1] / "assets" / "tiny"


@dataclass
class SoftInput:
    """Stage 2 of the LLM's pretraining: reading blended inputs. A share of the sequences have every page token's
    embedding replaced by alpha * e_token + (1 - alpha) * (p . E) with alpha ~ U(alpha_min, 1) per token and p a
    random softmax: the convex combinations of token embeddings that a softmax connector hands the LLM before its
    distribution is sharp. Large LLMs read such inputs (AlignVLM's premise); a model this small, trained on exact
    tokens only, stops reading below about 60 % weight on the right token (benchmarks/soft_input_tolerance.py)."""

    steps: int = 300  # 0 = no stage 2
    lr: float = 1e-3
    fraction: float = 0.5  # share of sequences whose page is blended
    alpha_min: float = 0.2
    sharpness_max: float = 3.0  # p = softmax(s * N(0, 1)) with s ~ U(0, this) per sequence


@dataclass
class TinyConfig:
    rows: int = 12
    cols: int = 12
    cell: int = 8  # = patch size
    vision: Net = field(
        default_factory=lambda: Net(hidden=128, layers=2, heads=4, mlp=256, steps=400, batch=32, lr=2e-3)
    )
    vision_pool: int = 600  # rendered pages per task for glyph pretraining
    llm: Net = field(default_factory=lambda: Net(hidden=128, layers=4, heads=4, mlp=384, steps=1800, batch=32, lr=3e-3))
    doc_loss_weight: float = 0.1  # next-token loss on page text and questions (answers weigh 1)
    quote_loss_weight: float = 0.5  # next-token loss on the page quoted after its questions
    qas_per_sequence: int = 4
    seed: int = 0
    soft_input: SoftInput = field(default_factory=SoftInput)

    @property
    def page(self) -> PageSpec:
        return PageSpec(rows=self.rows, cols=self.cols, cell=self.cell)

    def key(self) -> str:
        fields = flat(self)
        if self.soft_input.steps == 0:  # without stage 2 the stage-2 settings do not change the weights
            fields = {k: v for k, v in fields.items() if not k.startswith("soft_input_")}
        blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def stage1(self) -> TinyConfig:
        """The same backbone before stage 2 (its weights are stage 2's starting point, cached on their own)."""
        return replace_flat(self, soft_input_steps=0)


def make_tokenizer():
    """Character-level tokenizer over printable ASCII, newline and the drawing glyph, plus the tasks'
    two fixed prompt suffixes as single tokens (they follow every question)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

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


def build_models(cfg: TinyConfig, vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    vision = cfg.vision.siglip(cfg.rows, cfg.cols, cfg.cell)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.llm.hidden,
            intermediate_size=cfg.llm.mlp,
            num_hidden_layers=cfg.llm.layers,
            num_attention_heads=cfg.llm.heads,
            num_key_value_heads=cfg.llm.heads,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=None,
        )
    )
    return vision, llm


def prepare(cfg: TinyConfig, out_dir: Path, log=print, command: str = "alignbench prepare") -> Path:
    """Build and pretrain the tiny backbone; write it (safetensors + JSON) to `out_dir`.

    Stage 1 (vision tower, then LLM on exact text) is itself a cached backbone (`cfg.stage1()`), reused when
    it is shipped or cached; stage 2 (blended pages) continues from it."""
    t0 = time.time()
    extra: dict = {}
    if cfg.soft_input.steps > 0:
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
        extra = {
            "stage1": {"key": base_cfg.key(), "seconds": base_manifest["seconds"], "command": base_manifest["command"]},
            "stage2_final_loss": round(soft_loss, 4),
        }
    else:
        tokenizer = make_tokenizer()
        vision, llm = build_models(cfg, len(tokenizer))
        log(
            f"preparing tiny backbone {cfg.key()}: vision {sum(p.numel() for p in vision.parameters()):,} "
            f"params, llm {sum(p.numel() for p in llm.parameters()):,} params"
        )
        vision_acc = pretrain_vision(vision, cfg, log)
        llm_acc = pretrain_llm(llm, tokenizer, cfg, log)
    tmp = staging(out_dir)
    vision.save_pretrained(tmp / "vision")
    llm.save_pretrained(tmp / "llm")
    tokenizer.save_pretrained(tmp / "tokenizer")
    manifest = publish_prepared(
        tmp,
        out_dir,
        {
            "key": cfg.key(),
            "format_version": FORMAT_VERSION,
            "config": flat(cfg),
            "command": command,
            "seconds": round(time.time() - t0, 1),
            "vision_cell_accuracy": round(vision_acc, 4),
            "llm_answer_token_accuracy": round(llm_acc, 4),
            **extra,
            "torch": torch.__version__,
        },
    )
    log(f"prepared in {manifest['seconds']} s -> {out_dir}")
    return out_dir


def locate(cfg: TinyConfig) -> Path | None:
    """The shipped weights, else the user cache, if either holds this exact content key."""
    key = cfg.key()
    for path in (ASSETS, cache_root() / "backbones" / f"tiny-{key}"):
        if verified(path, key):
            return path
    return None


def load_tiny(cfg: TinyConfig | None = None, log=print) -> Backbone:
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
    return Backbone.build(
        vision,
        llm,
        tokenizer,
        functools.partial(glyph_transform, size=(side, side)),
        key=f"tiny-{cfg.key()}",
        page=cfg.page,
        path=str(path),
    )
