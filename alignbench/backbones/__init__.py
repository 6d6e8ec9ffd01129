"""Backbones by name (`BACKBONES`): the embedded `tiny` (the default) and `smollm2`, `hf` (any Hugging Face vision
tower and causal LM) and the presets naming the paper's pairs. `load_backbone(cfg)` loads the one `cfg` names.
Importing this package loads no model code: each entry's loader imports its module when it is called."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import AlignBenchError
from ..registry import Registry
from .hf import PRESETS


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone name means: how to load it, and what `BackboneConfig.validate` checks against."""

    load: Callable  # (BackboneConfig, device) -> Backbone
    embedded: bool = False  # it reads its own embedded pages at its tower's resolution (no tiling)
    needs_models: bool = False  # --vision and --llm must name the two models
    pair: tuple[str, str] | None = None  # a preset: the (vision tower, LLM) it names


def _load_tiny(cfg, device: str):
    from .tiny import load_tiny

    return load_tiny()


def _load_smollm2(cfg, device: str):
    from .token_tower import load

    return load(cfg, device)


def _load_hf(cfg, device: str):
    from .hf import load_hf_backbone

    return load_hf_backbone(cfg, device)


BACKBONES: Registry[BackboneSpec] = Registry(
    "backbone",
    None,
    __name__,
    punctuation="-_.",
    check=lambda obj: None if isinstance(obj, BackboneSpec) else f"is {type(obj).__name__}, not a BackboneSpec",
)
BACKBONES.add("tiny", BackboneSpec(_load_tiny, embedded=True))
BACKBONES.add("smollm2", BackboneSpec(_load_smollm2, embedded=True))
BACKBONES.add("hf", BackboneSpec(_load_hf, needs_models=True))
for _name, _pair in PRESETS.items():
    BACKBONES.add(_name, BackboneSpec(_load_hf, pair=_pair))


def presets() -> list[str]:
    """The presets' names, in the order `alignbench list` shows them."""
    return [name for name in BACKBONES.builtins() if BACKBONES.get(name).pair is not None]


def load_backbone(cfg, device: str = "cpu"):
    """The backbone `cfg` (a `BackboneConfig`) names, on `device`, vision tower frozen and in eval mode."""
    cfg.validate()
    backbone = BACKBONES.get(cfg.name).load(cfg, device)
    if cfg.attention != "auto":
        set_attention(backbone.llm, cfg.attention)
    backbone.vision.eval().requires_grad_(False)
    backbone.vision.to(device)
    backbone.llm.to(device)
    return backbone


def set_attention(llm, name: str) -> None:
    """The LLM's attention kernel, `name` as transformers spells it (`attn_implementation`)."""
    try:
        llm.set_attn_implementation(name)  # a model that cannot switch warns and keeps its kernel
        kept = llm.config._attn_implementation
        problem = None if kept == name else f"it kept {kept!r}"
    except (ValueError, ImportError, AttributeError) as e:
        problem = str(e).splitlines()[0]
    if problem:
        raise AlignBenchError(
            f"--attention {name}: the LLM ({type(llm).__name__}) cannot use it ({problem}); use --attention auto"
        )
