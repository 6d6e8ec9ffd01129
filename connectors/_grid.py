"""Shared by the connectors that work on the patch grid (hreducer, cabstractor, pixelshuffle): features
[B, t·N, d] (t tiles of N = rows × cols patches, row-major, tile-major) to images [B·t, d, rows, cols] and back.
Each tile is its own image, so a spatial operation never mixes two tiles."""

from __future__ import annotations

import dataclasses

import torch

from alignbench.connector import ConnectorContext


def grid_context(ctx: ConnectorContext, name: str) -> ConnectorContext:
    """What a grid connector keeps of its context: the dimensions and the checked grid, not the LLM (a connector
    that held the LLM would copy it whenever the connector is copied)."""
    return dataclasses.replace(ctx, llm=None, grid=ctx.patch_grid(name))


def to_maps(features: torch.Tensor, ctx: ConnectorContext, name: str) -> tuple[torch.Tensor, int]:
    """[B, t·N, d] -> ([B·t, d, rows, cols], t)."""
    batch, patches, dim = features.shape
    tiles = ctx.tiles_of(patches, name)
    rows, cols = ctx.patch_grid(name)
    maps = features.reshape(batch * tiles, rows, cols, dim).permute(0, 3, 1, 2)  # [B·t, d, rows, cols]
    return maps, tiles


def from_maps(maps: torch.Tensor, batch: int) -> torch.Tensor:
    """[B·t, C, h, w] -> [B, t·h·w, C] (row-major within a tile, tile-major)."""
    bt, channels, h, w = maps.shape
    return maps.permute(0, 2, 3, 1).reshape(batch, (bt // batch) * h * w, channels)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
