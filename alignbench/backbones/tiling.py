"""Tiling (InternVL, AlignVLM): an image cut into a grid of tower-sized tiles chosen by its aspect ratio, plus a
thumbnail of the whole image. The feature cache keys entries by this module's code."""

from __future__ import annotations


def tile_grid(width: int, height: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """(columns, rows) of the grid for an image, as InternVL's dynamic tiling chooses it:

    1. every grid with at most `max_tiles` tiles is a candidate;
    2. the one whose aspect ratio (columns / rows) is closest to the image's wins;
    3. on a tie, the grid with more tiles wins when the image has more than half the pixels of that grid
       (a large page gets the finer grid, a small one is not blown up)."""
    aspect = width / height
    grids = sorted(
        {(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if c * r <= max_tiles},
        key=lambda g: g[0] * g[1],
    )
    best, best_diff = (1, 1), float("inf")
    for c, r in grids:
        diff = abs(aspect - c / r)
        if diff < best_diff:
            best, best_diff = (c, r), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * c * r:
            best = (c, r)
    return best


def tile_image(image, max_tiles: int, tile: int) -> list:
    """The grid's tiles (row-major, each `tile` x `tile` pixels), then a thumbnail of the whole image when the
    grid has more than one tile."""
    from PIL import Image

    image = image.convert("RGB")
    cols, rows = tile_grid(image.width, image.height, max_tiles, tile)
    resized = image.resize((cols * tile, rows * tile), Image.BICUBIC)
    tiles = [
        resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)
    ]
    if len(tiles) > 1:
        tiles.append(image.resize((tile, tile), Image.BICUBIC))
    return tiles
