"""MLP projector (LLaVA-1.5 `mlp2x_gelu`): out = W2 · GELU(W1 · F), one token per patch."""

from dataclasses import dataclass

import torch
from torch import nn

from alignbench.connector import CONNECTORS, Connector, ConnectorContext


@CONNECTORS.register("mlp")
class MLPConnector(Connector):
    @dataclass
    class Config:
        pass  # LLaVA-1.5 fixes the shape: d -> D -> D

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        self.net = nn.Sequential(nn.Linear(ctx.vision_dim, ctx.llm_dim), nn.GELU(), nn.Linear(ctx.llm_dim, ctx.llm_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d]
        return self.net(features)  # [B, N, D]
