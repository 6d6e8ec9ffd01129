"""Built-in tasks, one definition each: every module of this package is imported, which registers it."""

from alignbench.registry import import_modules

import_modules(__name__, __path__)
