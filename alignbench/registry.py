"""One registry type, used for connectors and tasks: exact names, a decorator for built-ins and an
entry-point group for installed packages.

Third-party packages declare, in their own pyproject.toml::

    [project.entry-points."alignbench.connectors"]
    my_connector = "my_package.my_module:MyConnector"

Entry points are loaded lazily (on the first lookup or listing), never at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
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
