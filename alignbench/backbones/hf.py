"""Any Hugging Face vision tower and causal LM as a backbone (`--backbone hf --vision ID --llm ID`), and the presets
that name the paper's pairs. Models load from a local folder, else the hub cache, else the hub, never hanging
(`alignbench.backbones.hub`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import AlignBenchError
from .hub import hub_status, is_local, looks_like_path, missing_message, offline_mode

if TYPE_CHECKING:
    from ..config.backbone import BackboneConfig

# The paper's pairs (AlignVLM: SigLIP-400M with Llama 3.2 1B / 3B and Llama 3.1 8B), one word each.
PRESETS: dict[str, tuple[str, str]] = {
    "siglip-llama3.2-1b": ("google/siglip-so400m-patch14-384", "meta-llama/Llama-3.2-1B-Instruct"),
    "siglip-llama3.2-3b": ("google/siglip-so400m-patch14-384", "meta-llama/Llama-3.2-3B-Instruct"),
    "siglip-llama3.1-8b": ("google/siglip-so400m-patch14-384", "meta-llama/Llama-3.1-8B-Instruct"),
}


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _from_pretrained(loader, ref: str, kind: str, flag: str, cfg: BackboneConfig, **kwargs):
    """`loader.from_pretrained` for a local folder or a hub id, never hanging: offline (or when the hub does
    not answer) hub ids come from the local cache, and a miss is one message naming the id."""
    local = is_local(ref)
    if not local and looks_like_path(ref):
        raise AlignBenchError(
            f"cannot load {kind} {ref!r}: no such folder. Give a folder written by "
            f"save_pretrained, or a Hugging Face id, to {flag}"
        )
    online, why = (True, "") if local else hub_status()
    try:
        # local_files_only alone is not enough: with peft installed, transformers still asks the hub for an
        # adapter_config.json (and retries); the libraries' offline switches stop every such request.
        with offline_mode(not local and not online):
            return loader.from_pretrained(
                os.path.expanduser(ref) if local else ref,
                local_files_only=local or not online,
                trust_remote_code=cfg.trust_remote_code,
                **kwargs,
            )
    except (OSError, ValueError) as exc:
        if not local and not online:
            raise AlignBenchError(
                "cannot load "
                + missing_message(kind, ref, why, f"pass a local folder (written by save_pretrained) to {flag}")
            ) from None
        detail = " ".join(str(exc).split())[:300]
        raise AlignBenchError(
            f"cannot load {kind} {ref!r}: {detail}. Pass a local folder (save_pretrained) to {flag} or check the id"
        ) from None


def load_hf_backbone(cfg: BackboneConfig, device: str = "cpu"):
    """Any Hugging Face vision tower + any Hugging Face causal LM (ids or local folders)."""
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from .base import Backbone, torch_dtype

    cfg = cfg.resolved()
    cfg.validate()
    dtype = torch_dtype(cfg, device)
    dtype_kw = {"dtype": dtype} if _transformers_major() >= 5 else {"torch_dtype": dtype}
    # The PIL image processor everywhere, so features do not depend on whether torchvision is installed.
    pil_kw = {"backend": "pil"} if _transformers_major() >= 5 else {"use_fast": False}
    vision = _from_pretrained(AutoModel, cfg.vision, "vision tower", "--vision", cfg, **dtype_kw)
    processor = _from_pretrained(AutoImageProcessor, cfg.vision, "vision tower", "--vision", cfg, **pil_kw)
    llm = _from_pretrained(AutoModelForCausalLM, cfg.llm, "language model", "--llm", cfg, **dtype_kw)
    tokenizer = _from_pretrained(AutoTokenizer, cfg.llm, "language model", "--llm", cfg)
    vision = getattr(vision, "vision_model", vision)  # a full CLIP/SigLIP model -> its vision tower
    if cfg.chat_template == "none":
        tokenizer.chat_template = None

    def transform(images):
        return processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    key = f"hf:{cfg.vision}|{cfg.llm}" + (f"|tiles{cfg.max_tiles}" if cfg.max_tiles > 1 else "")
    return Backbone.build(
        vision, llm, tokenizer, transform, key=key, max_tiles=cfg.max_tiles, dtype=str(dtype).removeprefix("torch.")
    )
