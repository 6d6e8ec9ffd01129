"""The embedded suite: glyph pages and DocVQA/InfoVQA/ChartQA-like sets made offline from a seed."""

from .generators import GENERATORS, SCHEMAS, Doc, sample_docs, to_row
from .page import CELL_CLASSES, GLYPHS, GRAPHIC, Page, PageSpec, cell_labels, render

__all__ = ["CELL_CLASSES", "GENERATORS", "GLYPHS", "GRAPHIC", "SCHEMAS", "Doc", "Page", "PageSpec",
           "cell_labels", "render", "sample_docs", "to_row"]
