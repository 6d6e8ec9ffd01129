"""Ovis visual embedding table (arXiv 2405.20797): P = softmax(LN(W · F)) over K learnable "visual
words", out = P · E_vis with E_vis a learnable [K, D] table. As in Ovis' code, a LayerNorm sits on
the K logits and the softmax runs in float32. One token per patch.

Ovis uses K = 2^17 (Ovis 2.5: 65536); the embedded default scales K down with the backbone and the
value used is dumped with results (`--connector-arg vocab_size=65536` for paper scale).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from alignbench.connector import CONNECTORS, Connector, ConnectorContext, distribution_stats
from alignbench.errors import AlignBenchError


@CONNECTORS.register("ovis")
class OvisConnector(Connector):
    @dataclass
    class Config:
        vocab_size: int = 1024  # K, the number of visual words
        # Initial gain of the LayerNorm on the K logits (softmax inverse temperature; LayerNorm's default is 1).
        norm_gain_init: float = 1.0
        # Standard deviation of E_vis at initialisation; 0 (the default) = the standard deviation of the LLM's
        # own input embeddings, so the visual words start on the scale of the words the LLM reads (nn.Embedding's
        # N(0, 1) is ~8x that scale on the embedded backbone, std 0.13; chosen on the validation split, results/tune).
        table_init_std: float = 0.0

        def __post_init__(self):
            if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
                raise AlignBenchError(
                    f"connector option vocab_size={self.vocab_size!r} must be an integer of at "
                    "least 2 (visual words; default 1024)"
                )
            if not (math.isfinite(self.norm_gain_init) and self.norm_gain_init > 0):
                raise AlignBenchError(f"connector option norm_gain_init={self.norm_gain_init!r} must be positive")
            if not (math.isfinite(self.table_init_std) and self.table_init_std >= 0):
                raise AlignBenchError(
                    f"connector option table_init_std={self.table_init_std!r} must be 0 (the "
                    "LLM's embedding scale) or more"
                )

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        self.head = nn.Linear(ctx.vision_dim, config.vocab_size)
        self.norm = nn.LayerNorm(config.vocab_size)
        self.vte = nn.Embedding(config.vocab_size, ctx.llm_dim)  # E_vis
        nn.init.constant_(self.norm.weight, config.norm_gain_init)
        std = config.table_init_std or ctx.llm.get_input_embeddings().weight.detach().float().std().item()
        nn.init.normal_(self.vte.weight, std=std)

    def visual_word_distribution(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d] -> [B, N, K]
        return torch.softmax(self.norm(self.head(features)).float(), dim=-1)

    @torch.no_grad()
    def diagnostics(self, features: torch.Tensor) -> dict:
        return {"visual_word_distribution": distribution_stats(self.visual_word_distribution(features))}

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d]
        probs = self.visual_word_distribution(features)  # [B, N, K]
        return probs.to(self.vte.weight.dtype) @ self.vte.weight  # [B, N, D]
