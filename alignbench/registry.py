"""One registry type, used for connectors and tasks: exact names, a decorator for built-ins and an
entry-point group for installed packages.

Third-party packages declare, in their own pyproject.toml::

    [project.entry-points."alignbench.connectors"]
    my_connector = "my_package.my_module:MyConnector"

Entry points are loaded lazily (on the first lookup or listing), never at import time.

The only other way code enters is explicit: `load_plugin(PATH)` (the CLI's `--plugin PATH`) imports one
Python file or package directory, which registers its connectors and tasks with the same decorators.
Nothing is imported from the working directory or from an environment variable.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeVar

from .errors import AlignBenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_module: str):
        self.kind = kind  # "connector" / "task", used in messages
        self.group = group  # entry-point group
        self._builtin_module = builtin_module  # imported on first use; registers the built-ins
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@CONNECTORS.register("mlp")`."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise AlignBenchError(f"invalid {self.kind} name {name!r}: use letters, digits, '-' and '_'")
        if name in self._items and self._items[name] is not obj:
            raise AlignBenchError(f"{self.kind} {name!r} is registered twice; pick another name")
        if hasattr(obj, "name"):
            try:
                obj.name = name
            except AttributeError:
                pass
        self._items[name] = obj

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import importlib

        importlib.import_module(self._builtin_module)
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # any import error of a plug-in becomes one clear message
                raise AlignBenchError(
                    f"the {self.kind} plug-in {ep.name!r} ({ep.value}, entry-point group {self.group!r}) "
                    f"failed to import: {type(exc).__name__}: {exc}. Fix or uninstall that package."
                ) from exc
            self.add(ep.name, obj)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise AlignBenchError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


_PLUGINS: dict[str, ModuleType] = {}  # resolved path -> module, so a plug-in is imported once per process


def load_plugin(path: str | Path) -> ModuleType:
    """Import a plug-in given explicitly: a `.py` file or a package directory (with `__init__.py`).

    Its connectors and tasks register themselves on import (`@CONNECTORS.register(...)`, `TASKS.add(...)`).
    The built-ins are registered first, so a plug-in that reuses a built-in name fails with a clear message."""
    import importlib.util

    from .connector import CONNECTORS
    from .task import TASKS

    given = Path(path).expanduser()
    if given.is_dir():
        init, package = given / "__init__.py", True
        if not init.is_file():
            raise AlignBenchError(f"plug-in {str(path)!r} is a directory without __init__.py; give a Python file "
                                  "or a package directory")
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
    try:
        spec.loader.exec_module(module)
    except AlignBenchError as exc:
        del sys.modules[name]
        raise AlignBenchError(f"plug-in {str(path)!r}: {exc}") from None
    except BaseException as exc:  # any failure of foreign code on import becomes one clear message
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AlignBenchError(f"plug-in {str(path)!r} failed to import: {type(exc).__name__}: {exc}. "
                              "Fix the file or drop --plugin.") from None
    _PLUGINS[key] = module
    return module


def loaded_plugins() -> list[str]:
    """Resolved paths of the plug-ins imported with `load_plugin`, in order."""
    return list(_PLUGINS)
