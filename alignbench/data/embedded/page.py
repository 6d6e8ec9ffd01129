"""A document page as a grid of glyph cells, and its rendering to pixels.

The embedded suite draws every document on a grid of `rows x cols` cells of `cell` pixels, one
glyph per cell, with the cell size equal to the vision tower's patch size: each patch then sees
exactly one glyph. This alignment is the suite's difficulty knob (`PageSpec.jitter` moves glyphs
off the cell centres): a tower of a few hundred thousand parameters reads aligned glyphs after a
minute of training, while free-floating text stays unreadable at this size.

The same grid is the page's *text form* (row-major, one character per cell), which the embedded
language model is pretrained on; a connector that turns each patch into the right character
embedding therefore hands the LLM exactly what it learned to read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Characters that appear *on* pages (questions and answers may use any printable ASCII).
GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:/%$-#()&'+!?"
# A cell covered by a drawing (chart bars, lines, icons) rather than a glyph.
GRAPHIC = "\u2588"
CELL_CLASSES = GLYPHS + GRAPHIC


@dataclass(frozen=True)
class PageSpec:
    rows: int = 12
    cols: int = 12
    cell: int = 8  # pixels; equals the vision tower's patch size
    font_size: int = 9
    jitter: int = 0  # max glyph offset from the cell centre, in pixels (0 = aligned)
    # Values right after their key ("MILK 3.20") or flush right on the row. Right alignment makes the
    # LLM find the value by row position instead of adjacency: far harder for a model this small.
    right_align: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.cols * self.cell, self.rows * self.cell  # (width, height)

    @property
    def num_cells(self) -> int:
        return self.rows * self.cols


@dataclass
class Page:
    """Characters per cell plus styling; `drawings` paint graphics onto the rendered page."""

    spec: PageSpec
    grid: list[list[str]] = field(default_factory=list)
    inverted: set[tuple[int, int]] = field(default_factory=set)  # white-on-black cells
    drawings: list = field(default_factory=list)  # callables (Image, spec) -> None

    def __post_init__(self):
        if not self.grid:
            self.grid = [[" "] * self.spec.cols for _ in range(self.spec.rows)]

    def write(self, row: int, col: int, text: str, inverted: bool = False) -> None:
        if not 0 <= row < self.spec.rows or col < 0 or col + len(text) > self.spec.cols:
            raise ValueError(f"text {text!r} at ({row}, {col}) does not fit a {self.spec.rows}x{self.spec.cols} page")
        for i, ch in enumerate(text):
            if ch not in CELL_CLASSES:
                raise ValueError(f"character {ch!r} is not drawable")
            self.grid[row][col + i] = ch
            if inverted:
                self.inverted.add((row, col + i))

    def mark_graphic(self, row: int, col: int) -> None:
        self.grid[row][col] = GRAPHIC

    def text(self) -> str:
        """Row-major text form: one character per cell."""
        return "".join("".join(r) for r in self.grid)

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.grid]


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # DejaVu Sans Mono ships inside matplotlib, so rendering is identical on every machine.
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSansMono-Bold.ttf")
    return ImageFont.truetype(path, size)


def render(page: Page, rng: np.random.Generator | None = None) -> Image.Image:
    spec = page.spec
    image = Image.new("RGB", spec.size, "white")
    for draw_fn in page.drawings:
        draw_fn(image, spec)
    draw = ImageDraw.Draw(image)
    font = _font(spec.font_size)
    c = spec.cell
    for r, row in enumerate(page.grid):
        for k, ch in enumerate(row):
            if ch in (" ", GRAPHIC):
                continue
            x, y = k * c + c / 2, r * c + c / 2
            if spec.jitter and rng is not None:
                x, y = x + rng.integers(-spec.jitter, spec.jitter + 1), y + rng.integers(-spec.jitter, spec.jitter + 1)
            if (r, k) in page.inverted:
                draw.rectangle([k * c, r * c, (k + 1) * c - 1, (r + 1) * c - 1], fill="black")
                draw.text((x, y), ch, font=font, fill="white", anchor="mm")
            else:
                draw.text((x, y), ch, font=font, fill="black", anchor="mm")
    return image


def cell_labels(page: Page) -> list[int]:
    """Per-cell class ids (row-major) over CELL_CLASSES: the vision tower's pretraining target."""
    return [CELL_CLASSES.index(ch) for row in page.grid for ch in row]


def graphic_cells(image: Image.Image, spec: PageSpec, region: tuple[int, int, int, int], ink: float = 0.08):
    """Cells inside `region` (row0, col0, row1, col1) whose share of non-white pixels exceeds `ink`."""
    arr = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    r0, c0, r1, c1 = region
    c = spec.cell
    for r in range(r0, r1):
        for k in range(c0, c1):
            if (arr[r * c : (r + 1) * c, k * c : (k + 1) * c] < 0.85).mean() > ink:
                yield r, k
