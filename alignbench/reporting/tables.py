"""Markdown tables, the one way the library writes them: pandas' `to_markdown` (through tabulate)."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(table, floatfmt: str | tuple[str, ...] = ".3g") -> str:
    """A DataFrame as a GitHub Markdown table (pandas' `to_markdown`, through tabulate), without the index."""
    return table.to_markdown(index=False, floatfmt=floatfmt)


def markdown_rows(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells already written as text, as a GitHub Markdown table (no trailing newline): every cell as
    given (tabulate reads no numbers in them), columns padded to their widest cell."""
    import pandas as pd

    width = len(headers)
    frame = pd.DataFrame([[*r, *[""] * (width - len(r))] for r in rows], columns=range(width), dtype=object)
    return frame.to_markdown(index=False, headers=list(headers), disable_numparse=True)
