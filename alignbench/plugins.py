"""Plug-ins given explicitly: `load_plugin(PATH)` (the CLI's `--plugin PATH`) imports one Python file or package
directory, which registers its connectors and tasks with the registries' own decorators
(`@CONNECTORS.register(...)`, `TASKS.add(...)`). Installed packages use the entry-point groups instead
(`alignbench.registry`)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from types import ModuleType

from .connector import CONNECTORS
from .errors import AlignBenchError
from .registry import note_plugin_module
from .task import TASKS

_PLUGINS: dict[str, ModuleType] = {}  # resolved path -> module, so a plug-in is imported once per process


def load_plugin(path: str | Path) -> ModuleType:
    """Import a plug-in given explicitly: a `.py` file or a package directory (with `__init__.py`).

    Its connectors and tasks register themselves on import (`@CONNECTORS.register(...)`, `TASKS.add(...)`).
    The built-ins are registered first, so a plug-in that reuses a built-in name fails with a clear message."""
    import importlib.util

    given = Path(path).expanduser()
    if given.is_dir():
        init, package = given / "__init__.py", True
        if not init.is_file():
            raise AlignBenchError(
                f"plug-in {str(path)!r} is a directory without __init__.py; give a Python file or a package directory"
            )
    elif given.is_file() and given.suffix == ".py":
        init, package = given, False
    else:
        raise AlignBenchError(f"plug-in {str(path)!r} not found; give a Python file (.py) or a package directory")
    key = str(given.resolve())
    if key in _PLUGINS:
        return _PLUGINS[key]
    CONNECTORS.names(), TASKS.names()  # built-ins and installed entry points first
    stem = "".join(c if c.isalnum() else "_" for c in (given.name if package else given.stem))
    name = f"alignbench_plugin_{stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"  # never shadows a real module
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[key] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    note_plugin_module(name, str(path))
    try:
        spec.loader.exec_module(module)
    except AlignBenchError as exc:
        del sys.modules[name]
        raise AlignBenchError(f"plug-in {str(path)!r}: {exc}") from None
    except BaseException as exc:  # any failure of foreign code on import becomes one clear message
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AlignBenchError(
            f"plug-in {str(path)!r} failed to import: {type(exc).__name__}: {exc}. Fix the file or drop --plugin."
        ) from None
    _PLUGINS[key] = module
    return module


def loaded_plugins() -> list[str]:
    """Resolved paths of the plug-ins imported with `load_plugin`, in order."""
    return list(_PLUGINS)
