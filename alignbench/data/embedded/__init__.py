"""The embedded suite: glyph pages (`page`), token pages (`tokens`) and DocVQA/InfoVQA/ChartQA-like sets made offline
from a seed (`generators`; `dataset` turns them into datasets in the real schemas)."""
