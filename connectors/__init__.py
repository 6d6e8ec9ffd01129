"""Built-in connectors, one file each: every module of this package is imported, which registers it. Tables list
the study's four first, in AlignVLM's Table 2 order, then the others by name."""

from alignbench.registry import import_modules

import_modules(__name__, __path__, first=("mlp", "perceiver", "ovis", "align"))
