"""Pixel-shuffle (space-to-depth) connector, as InternVL (Chen et al., arXiv 2404.16821, "pixel shuffle"
with scale 0.5), Idefics3 / SmolVLM (Laurençon et al., arXiv 2408.12637) and nanoVLM ship it: each r × r block
of neighbouring patches is concatenated into one vector of width r²·d, then an MLP maps it to the LLM width:

    x_(i,j) = [F_(ri+a, rj+b)]_(a,b ∈ 0..r-1) ∈ R^(r²·d),   out = MLP(x)
    N = rows × cols patches -> ⌈rows / r⌉ × ⌈cols / r⌉ tokens per tile

The MLP is InternVL's `mlp1`: LayerNorm(r²·d) -> Linear(r²·d, D) -> GELU -> Linear(D, D) (`mlp_depth=2`);
Idefics3 and nanoVLM use one bias-free linear layer (`mlp_depth=1`, `norm=false`). A grid whose sides are not
multiples of r is zero-padded at the bottom and right to the next multiple; a grid the backbone cannot state
(N not a square, no grid given) is refused with one message.
"""

from dataclasses import dataclass

import torch
from torch import nn

from alignbench.connector import CONNECTORS, Connector, ConnectorContext
from alignbench.errors import AlignBenchError

from ._grid import ceil_div, from_maps, grid_context, to_maps


@CONNECTORS.register("pixelshuffle")
class PixelShuffleConnector(Connector):
    @dataclass
    class Config:
        ratio: int = 2  # r: an r x r block of patches becomes one token (InternVL: 2; Idefics3: 3)
        mlp_depth: int = 2  # 2: InternVL's LayerNorm + two-layer GELU MLP; 1: one linear layer (Idefics3)
        norm: bool = True  # LayerNorm on the concatenated block before the MLP (InternVL)

        def __post_init__(self):
            for name in ("ratio", "mlp_depth"):
                value = getattr(self, name)
                if not isinstance(value, int) or value < 1 or (name == "mlp_depth" and value > 2):
                    raise AlignBenchError(
                        f"connector option {name}={value!r} must be "
                        f"{'1 or 2' if name == 'mlp_depth' else 'a positive integer'} "
                        f"(default {getattr(type(self), name)})"
                    )

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        self.ctx = grid_context(ctx, self.name or "pixelshuffle")
        rows, cols = self.ctx.grid
        r = config.ratio
        self.grid_out = (ceil_div(rows, r), ceil_div(cols, r))
        width = r * r * ctx.vision_dim
        self.norm = nn.LayerNorm(width) if config.norm else nn.Identity()
        if config.mlp_depth == 2:
            self.mlp = nn.Sequential(nn.Linear(width, ctx.llm_dim), nn.GELU(), nn.Linear(ctx.llm_dim, ctx.llm_dim))
        else:
            self.mlp = nn.Linear(width, ctx.llm_dim, bias=False)

    def num_tokens(self, num_patches: int) -> int:
        return self.ctx.tiles_of(num_patches, self.name) * self.grid_out[0] * self.grid_out[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, t·N, d]
        maps, _ = to_maps(features, self.ctx, self.name)  # [B·t, d, rows, cols]
        r = self.config.ratio
        rows, cols = self.grid_out[0] * r, self.grid_out[1] * r
        maps = nn.functional.pad(maps, (0, cols - maps.shape[-1], 0, rows - maps.shape[-2]))  # to multiples of r
        blocks = nn.functional.pixel_unshuffle(maps, r)  # [B·t, d·r², rows / r, cols / r]
        tokens = from_maps(blocks, features.shape[0])  # [B, t·(rows / r)·(cols / r), d·r²]
        return self.mlp(self.norm(tokens))  # [B, T, D]
