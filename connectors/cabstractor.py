"""C-Abstractor (Honeybee, Cha et al., arXiv 2312.06742, §3.2): convolutions keep locality while pooling cuts
the token count. Learned position embeddings are added to the features, then L ResNet blocks, adaptive average
pooling to an M = h' × w' grid, L more ResNet blocks, and an MLP readout to the LLM width:

    X = F + P;   Y = Readout(ResBlocks_L(AdaptiveAvgPool_(h', w')(ResBlocks_L(X))))
    N = rows × cols patches -> h' × w' tokens per tile (default: ⌈rows / 2⌉ × ⌈cols / 2⌉, Honeybee's 576 -> 144)

Each block is Honeybee's RegNet bottleneck (timm `RegStage`): 1 × 1, 3 × 3 and 1 × 1 convolutions, each followed
by a channel LayerNorm, SiLU between them, squeeze-excitation (ratio 0.25) after the 3 × 3, and a residual
connection (projected by a 1 × 1 convolution where the width changes); our 3 × 3 convolution is not grouped.
The readout is Linear(h, D) followed by (SiLU, Linear(D, D)) × (mlp_depth - 1), as Honeybee's `build_mlp`.
"""

from dataclasses import dataclass

import torch
from torch import nn

from alignbench.connector import CONNECTORS, Connector, ConnectorContext
from alignbench.errors import AlignBenchError

from ._grid import ceil_div, from_maps, grid_context, to_maps


class _ChannelNorm(nn.GroupNorm):
    """LayerNorm over the channels of a [B, C, H, W] map at each position (Honeybee's LayerNorm2d)."""

    def __init__(self, channels: int):
        super().__init__(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        return nn.functional.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class _Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        squeeze = max(1, c_in // 4)  # squeeze-excitation width: a quarter of the block's input width
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False),
            _ChannelNorm(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _ChannelNorm(c_out),
            nn.SiLU(),
        )
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_out, squeeze, 1), nn.SiLU(), nn.Conv2d(squeeze, c_out, 1), nn.Sigmoid()
        )
        self.out = nn.Sequential(nn.Conv2d(c_out, c_out, 1, bias=False), _ChannelNorm(c_out))
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), _ChannelNorm(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, H, W] -> [B, c_out, H, W]
        h = self.body(x)
        h = self.out(h * self.se(h))
        return nn.functional.silu(h + self.shortcut(x))


@CONNECTORS.register("cabstractor")
class CAbstractorConnector(Connector):
    @dataclass
    class Config:
        depth: int = 3  # L: ResNet blocks before and after the pooling (Honeybee: 3)
        grid_out: int = 0  # output grid side h' = w'; 0: half of each side of the patch grid, rounded up
        hidden: int = 0  # width of the blocks; 0: the vision width d (Honeybee keeps the encoder's width)
        mlp_depth: int = 2  # readout layers (Honeybee: 2)
        pos_emb: bool = True  # learned position embeddings added to the features (Honeybee: on)

        def __post_init__(self):
            for name, low in (("depth", 0), ("grid_out", 0), ("hidden", 0), ("mlp_depth", 1)):
                value = getattr(self, name)
                if not isinstance(value, int) or value < low:
                    raise AlignBenchError(
                        f"connector option {name}={value!r} must be an integer ≥ {low} "
                        f"(default {getattr(type(self), name)})"
                    )

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        self.ctx = grid_context(ctx, self.name or "cabstractor")
        rows, cols = self.ctx.grid
        if config.grid_out > max(rows, cols):
            raise AlignBenchError(
                f"connector option grid_out={config.grid_out} is larger than the patch grid "
                f"({rows} x {cols}); pooling cannot add tokens: give cabstractor.grid_out="
                f"{max(rows, cols)} or less"
            )
        self.grid_out = (
            (config.grid_out, config.grid_out) if config.grid_out else (ceil_div(rows, 2), ceil_div(cols, 2))
        )
        hidden = config.hidden or ctx.vision_dim
        self.pos = nn.Parameter(torch.zeros(1, ctx.vision_dim, rows, cols)) if config.pos_emb else None
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        widths = [ctx.vision_dim] + [hidden] * config.depth
        self.before = nn.Sequential(*(_Bottleneck(a, b) for a, b in zip(widths, widths[1:])))
        self.pool = nn.AdaptiveAvgPool2d(self.grid_out)
        self.after = nn.Sequential(*(_Bottleneck(hidden, hidden) for _ in range(config.depth)))
        layers: list[nn.Module] = [nn.Linear(hidden, ctx.llm_dim)]
        for _ in range(config.mlp_depth - 1):
            layers += [nn.SiLU(), nn.Linear(ctx.llm_dim, ctx.llm_dim)]
        self.readout = nn.Sequential(*layers)

    def num_tokens(self, num_patches: int) -> int:
        return self.ctx.tiles_of(num_patches, self.name) * self.grid_out[0] * self.grid_out[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, t·N, d]
        maps, _ = to_maps(features, self.ctx, self.name)  # [B·t, d, rows, cols]
        if self.pos is not None:
            maps = maps + self.pos
        pooled = self.after(self.pool(self.before(maps)))  # [B·t, h, h', w']
        return self.readout(from_maps(pooled, features.shape[0]))  # [B, t·h'·w', D]
