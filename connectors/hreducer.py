"""H-Reducer (DocOwl 1.5, Hu et al., arXiv 2403.12895, §3.2): a 1 × k convolution with stride 1 × k merges k
horizontally adjacent patches (k = 4 in the paper), then a fully connected layer maps to the LLM width:

    V̂ = FC(Conv_{1×k}(V)),   N = rows × cols patches -> rows × ⌈cols / k⌉ tokens per tile

Text lines run horizontally, so merging along a row keeps a line's characters together. The paper's grids
(448 / 14 = 32 columns) are multiples of 4; a grid whose width is not is zero-padded on the right to the next
multiple (as a convolution with right padding would). A grid the backbone cannot state (N not a square,
no grid given) is refused with one message.
"""

from dataclasses import dataclass

import torch
from torch import nn

from alignbench.connector import CONNECTORS, Connector, ConnectorContext
from alignbench.errors import AlignBenchError

from ._grid import ceil_div, from_maps, grid_context, to_maps


@CONNECTORS.register("hreducer")
class HReducerConnector(Connector):
    @dataclass
    class Config:
        kernel: int = 4  # k: horizontally adjacent patches merged into one token (DocOwl 1.5: 4)

        def __post_init__(self):
            if not isinstance(self.kernel, int) or self.kernel < 1:
                raise AlignBenchError(f"connector option kernel={self.kernel!r} must be a positive integer (default 4)")

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        self.ctx = grid_context(ctx, self.name or "hreducer")
        rows, cols = self.ctx.grid
        self.grid_out = (rows, ceil_div(cols, config.kernel))
        self.conv = nn.Conv2d(ctx.vision_dim, ctx.vision_dim, kernel_size=(1, config.kernel), stride=(1, config.kernel))
        self.fc = nn.Linear(ctx.vision_dim, ctx.llm_dim)

    def num_tokens(self, num_patches: int) -> int:
        return self.ctx.tiles_of(num_patches, self.name) * self.grid_out[0] * self.grid_out[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, t·N, d]
        maps, _ = to_maps(features, self.ctx, self.name)  # [B·t, d, rows, cols]
        pad = self.grid_out[1] * self.config.kernel - maps.shape[-1]
        if pad:
            maps = nn.functional.pad(maps, (0, pad))  # right edge, to a multiple of k columns
        merged = self.conv(maps)  # [B·t, d, rows, ⌈cols / k⌉]
        return self.fc(from_maps(merged, features.shape[0]))  # [B, t·rows·⌈cols / k⌉, D]
