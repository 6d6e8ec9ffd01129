"""Perceiver Resampler (Flamingo, arXiv 2204.14198; Idefics2): learned latent queries cross-attend to
the vision features (keys/values = features concatenated with the latents), over `depth` layers,
then a LayerNorm. Emits `num_latents` tokens whatever the number of patches.

AlignVLM gives neither depth nor latent count; the defaults below are ours and are dumped with results.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from alignbench.connector import CONNECTORS, Connector, ConnectorContext
from alignbench.errors import AlignBenchError


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int):
        super().__init__()
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim)
        )

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)  # [B, L, D]
        kv = torch.cat([self.norm_media(media), q], dim=1)  # [B, N + L, D]
        latents = latents + self.attn(q, kv, kv, need_weights=False)[0]
        return latents + self.ff(latents)


@CONNECTORS.register("perceiver")
class PerceiverConnector(Connector):
    @dataclass
    class Config:
        num_latents: int = 64  # the usual Idefics2 / Flamingo choice
        depth: int = 2
        heads: int = 4
        ff_mult: int = 4
        latents_init_std: float = 0.02  # standard deviation of the learned latent queries at initialisation
        # Initial gain of the output LayerNorm; 0 = the standard deviation of the LLM's input embeddings, so
        # the emitted tokens start on the scale of the words the LLM reads (1.0 = LayerNorm's default).
        norm_gain_init: float = 1.0

        def __post_init__(self):
            for name in ("num_latents", "depth", "heads", "ff_mult"):
                if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                    raise AlignBenchError(
                        f"connector option {name}={getattr(self, name)!r} must be a positive "
                        f"integer (default {getattr(type(self), name)})"
                    )
            for name in ("latents_init_std", "norm_gain_init"):
                if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                    raise AlignBenchError(f"connector option {name}={getattr(self, name)!r} must be 0 or more")

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        if ctx.llm_dim % config.heads:
            raise AlignBenchError(
                f"connector option heads={config.heads} must divide the LLM width {ctx.llm_dim} "
                "(the latents attend with that many heads)"
            )
        self.proj = nn.Linear(ctx.vision_dim, ctx.llm_dim)
        self.latents = nn.Parameter(torch.randn(config.num_latents, ctx.llm_dim) * config.latents_init_std)
        self.blocks = nn.ModuleList(_Block(ctx.llm_dim, config.heads, config.ff_mult) for _ in range(config.depth))
        self.norm = nn.LayerNorm(ctx.llm_dim)
        gain = config.norm_gain_init or ctx.llm.get_input_embeddings().weight.detach().float().std().item()
        nn.init.constant_(self.norm.weight, gain)

    def num_tokens(self, num_patches: int) -> int:
        return self.config.num_latents

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d]
        media = self.proj(features)  # [B, N, D]
        latents = self.latents.unsqueeze(0).expand(features.shape[0], -1, -1)  # [B, L, D]
        for block in self.blocks:
            latents = block(media, latents)
        return self.norm(latents)  # [B, L, D]
