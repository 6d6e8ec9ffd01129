"""Token pages: the embedded documents drawn for a pretrained LLM, one of its own tokens per cell.

A glyph page (`page.py`) puts one character per cell, so a connector that reads it perfectly hands the LLM a
page one character per token: far from what a pretrained LLM reads (SmolLM2-135M answers 1 question in 20 that way
against 22 in 30 from the same text tokenised normally, `../shared/CALIBRATION.md`). A token page keeps the
document and its questions but lays out each text line as the LLM's tokenizer splits it, one token per cell,
rendered as text. Its *text form* (cell by cell, a blank cell read as the space token) is then about as readable as
the ordinary text (CALIBRATION: 16/30 against 17/30 with the chat template), and a perfect connector hands the LLM
that sequence.

Layout (`TokenGrid`): the glyph page's non-blank lines in order, each line's tokens from the left of a row, a line
longer than a row wrapping onto the next; cells of `cell` pixels, square (`rows` = `cols`, as a ViT takes square
images). Drawings (chart plots, icons) are left out: in the embedded sets every question is answered by printed
text, and a drawing's cells would have no token to stand for. A token is drawn left-aligned in DejaVu Sans Mono
Bold, a leading space as a blank advance (so " AN" and "AN" differ), at the largest font size that fits the cell.

Difficulty knobs: `cell` (pixels per token: smaller cells shrink long tokens' glyphs), `noise` at evaluation (the
probe), and the generators' own `PageSpec` options (right-aligned values).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

from .page import GRAPHIC, _font
from .schemas import Doc

BLANK = ""  # a cell with no token


@dataclass(frozen=True)
class TokenGrid:
    rows: int = 10
    cols: int = 10
    cell: int = 24  # pixels; equals the vision tower's patch size

    @property
    def size(self) -> tuple[int, int]:
        return self.cols * self.cell, self.rows * self.cell

    @property
    def num_cells(self) -> int:
        return self.rows * self.cols


class PageTooLong(ValueError):
    """A document whose lines need more rows than the grid has."""


def token_cells(doc: Doc, tokenizer, grid: TokenGrid) -> list[str]:
    """The page's cells, row-major: each the text of one token (a leading space kept), BLANK where none."""
    cells: list[str] = []
    for line in doc.page.lines():
        line = line.replace(GRAPHIC, " ").rstrip()
        if not line:
            continue
        pieces = _pieces(tokenizer, line)
        for start in range(0, len(pieces), grid.cols):
            row = pieces[start : start + grid.cols]
            cells += row + [BLANK] * (grid.cols - len(row))
    if len(cells) > grid.num_cells:
        raise PageTooLong(
            f"the page needs {len(cells) // grid.cols} rows of {grid.cols} tokens; the grid has {grid.rows}"
        )
    return cells + [BLANK] * (grid.num_cells - len(cells))


def _pieces(tokenizer, line: str) -> list[str]:
    """The line's tokens as the text each stands for (so that joining them gives the line back)."""
    ids = tokenizer(line, add_special_tokens=False)["input_ids"]
    out, done = [], ""
    for k in range(len(ids)):
        text = tokenizer.decode(ids[: k + 1], skip_special_tokens=False)
        out.append(text[len(done) :])
        done = text
    return out


def cell_ids(cells: list[str], tokenizer) -> list[int]:
    """The text form: one token id per cell (a blank cell is the space token)."""
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    out = []
    for text in cells:
        ids = tokenizer(text or " ", add_special_tokens=False)["input_ids"]
        out.append(ids[0] if len(ids) == 1 else space[0])
    return out


def render_tokens(cells: list[str], grid: TokenGrid) -> Image.Image:
    image = Image.new("RGB", grid.size, "white")
    draw = ImageDraw.Draw(image)
    for k, text in enumerate(cells):
        if not text.strip():
            continue
        r, c = divmod(k, grid.cols)
        font = _font(_fit(len(text), grid.cell))
        draw.text((c * grid.cell + 1, r * grid.cell + grid.cell / 2), text, font=font, fill="black", anchor="lm")
    return image


@lru_cache(maxsize=64)
def _fit(chars: int, cell: int) -> int:
    """The largest font size (at most cell / 2) whose `chars` characters fit the cell's width."""
    size = max(1, cell // 2)
    while size > 1 and _font(size).getlength("M" * chars) > cell - 2:
        size -= 1
    return size


def tokenizer_digest(tokenizer) -> str:
    """Identifies how a tokenizer splits text (its vocabulary and merges), for cache keys."""
    blob = (
        tokenizer.backend_tokenizer.to_str()
        if hasattr(tokenizer, "backend_tokenizer")
        else repr(sorted(tokenizer.get_vocab().items()))
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TokenPages:
    """Renders a `Doc` as a token page for one tokenizer; `key` names the layout and the tokenizer."""

    def __init__(self, tokenizer, grid: TokenGrid):
        self.tokenizer, self.grid = tokenizer, grid
        self.key = hashlib.sha256(repr((asdict(grid), tokenizer_digest(tokenizer))).encode()).hexdigest()[:16]

    def cells(self, doc: Doc) -> list[str]:
        return token_cells(doc, self.tokenizer, self.grid)

    def __call__(self, doc: Doc) -> Image.Image:
        return render_tokens(self.cells(doc), self.grid)
