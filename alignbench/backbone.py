"""The backbone every connector plugs into: a Hugging Face vision tower and a Hugging Face causal LM.

`load_backbone` returns the same `Backbone` whether it is the embedded default (`tiny`, built from
transformers configs and pretrained by `alignbench prepare`) or a pair of saved/hub models. Every
connector dimension is derived from it (`vision_dim`, `llm_dim`, `num_patches`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AlignBenchError


@dataclass
class BackboneConfig:
    name: str = "tiny"  # "tiny" (embedded default) or "hf" (use `vision` and `llm`)
    vision: str | None = None  # Hugging Face id or local folder of a vision tower
    llm: str | None = None  # Hugging Face id or local folder of a causal LM
    trust_remote_code: bool = False


@dataclass
class Backbone:
    vision: nn.Module  # pixel_values [B, 3, H, W] -> last_hidden_state [B, N, d]
    llm: Any  # a transformers causal LM
    tokenizer: Any
    image_transform: Any  # list[PIL.Image] -> FloatTensor [B, 3, H, W]
    key: str  # content key: identifies the weights (used to key feature and result caches)
    info: dict = field(default_factory=dict)

    @property
    def vision_dim(self) -> int:
        return self.info["vision_dim"]

    @property
    def llm_dim(self) -> int:
        return self.llm.get_input_embeddings().weight.shape[1]

    @property
    def num_patches(self) -> int:
        return self.info["num_patches"]

    @torch.no_grad()
    def encode_images(self, images: list, batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
        """Vision features [len(images), N, d] for PIL images, in batches."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = self.image_transform(images[i : i + batch_size]).to(device)
            out.append(vision_features(self.vision, pixels).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.num_patches, self.vision_dim)


def vision_features(vision: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return vision(pixel_values=pixel_values).last_hidden_state  # [B, N, d]


def glyph_transform(images: list) -> torch.Tensor:
    """SigLIP's normalisation (mean 0.5, std 0.5) for already-sized RGB pages."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
    return torch.from_numpy((arr - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def _local_or_hub(ref: str) -> tuple[str, bool]:
    """(reference, local_files_only): local folders never touch the network, nor does HF_HUB_OFFLINE=1."""
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser()), True
    return ref, os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_hf_backbone(cfg: BackboneConfig) -> Backbone:
    """Any Hugging Face vision tower + any Hugging Face causal LM (ids or local folders)."""
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if not cfg.vision or not cfg.llm:
        raise AlignBenchError("backbone 'hf' needs both --vision (a vision tower) and --llm (a causal LM)")
    v_ref, v_local = _local_or_hub(cfg.vision)
    l_ref, l_local = _local_or_hub(cfg.llm)
    try:
        vision = AutoModel.from_pretrained(v_ref, local_files_only=v_local, trust_remote_code=cfg.trust_remote_code)
        processor = AutoImageProcessor.from_pretrained(v_ref, local_files_only=v_local,
                                                       trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise AlignBenchError(f"cannot load vision tower {cfg.vision!r}: {exc}. Pass a local folder "
                              "(save_pretrained) or check the id; the hub may be unreachable.") from None
    try:
        llm = AutoModelForCausalLM.from_pretrained(l_ref, local_files_only=l_local,
                                                   trust_remote_code=cfg.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(l_ref, local_files_only=l_local,
                                                  trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise AlignBenchError(f"cannot load language model {cfg.llm!r}: {exc}. Pass a local folder "
                              "(save_pretrained) or check the id; the hub may be unreachable.") from None
    vision = getattr(vision, "vision_model", vision)  # a full CLIP/SigLIP model -> its vision tower

    def transform(images):
        return processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    backbone = Backbone(vision, llm, tokenizer, transform, key=f"hf:{cfg.vision}|{cfg.llm}")
    _derive_dims(backbone)
    return backbone


def _derive_dims(backbone: Backbone) -> None:
    """N and d are read off one dummy image, so towers with or without a CLS token both work."""
    from PIL import Image

    size = backbone.info.get("image_size", (224, 224))
    with torch.no_grad():
        feats = vision_features(backbone.vision, backbone.image_transform([Image.new("RGB", size, "white")]))
    backbone.info.update(num_patches=feats.shape[1], vision_dim=feats.shape[2])
    if backbone.tokenizer.pad_token_id is None:
        backbone.tokenizer.pad_token = backbone.tokenizer.eos_token


def load_backbone(cfg: BackboneConfig, progress=None) -> Backbone:
    if cfg.name == "tiny":
        from .tiny import load_tiny

        backbone = load_tiny(progress=progress)
    elif cfg.name == "hf":
        backbone = load_hf_backbone(cfg)
    else:
        raise AlignBenchError(f"unknown backbone {cfg.name!r}; known backbones: hf, tiny")
    backbone.vision.eval().requires_grad_(False)
    return backbone
