"""One registry type, used for connectors, tasks, backbones and metrics: exact names, a decorator for built-ins
and, for connectors and tasks, an entry-point group for installed packages.

Third-party packages declare, in their own pyproject.toml::

    [project.entry-points."alignbench.connectors"]
    my_connector = "my_package.my_module:MyConnector"

Entry points are loaded lazily (on the first lookup or listing), never at import time.

The only other way code enters is explicit: `alignbench.plugins.load_plugin(PATH)` (the CLI's `--plugin PATH`)
imports one Python file or package directory, which registers its connectors and tasks with the same decorators.
Nothing is imported from the working directory or from an environment variable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import AlignBenchError

T = TypeVar("T")


def _provider(ep: metadata.EntryPoint) -> str:
    """Who installed an entry point: its distribution (what `pip uninstall` takes) and its target."""
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return (
        f"the installed package {dist!r} (entry point {ep.name} = {ep.value})"
        if dist
        else f"an installed entry point ({ep.name} = {ep.value})"
    )


def _uninstall(ep: metadata.EntryPoint) -> str:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"pip uninstall {dist}" if dist else "uninstall the package that declares it"


class Registry(Generic[T]):
    """Names to objects. `check(obj)` says what is wrong with an object offered under a name (None: fine).

    Installed entry points are loaded on the first lookup or listing. One that fails to import, is not what this
    registry holds, or takes a name already taken (a built-in or another package) is recorded as broken, with
    one message naming its provider and the fix: asking for that name raises the message, every other name
    works, and `broken()` lists them (so `alignbench list` can show them)."""

    def __init__(
        self,
        kind: str,
        group: str | None,
        builtin_module: str,
        check: Callable[[object], str | None] | None = None,
        punctuation: str = "-_",
    ):
        self.kind = kind  # "connector" / "task" / ..., used in messages
        self._punctuation = punctuation  # allowed in names besides letters and digits
        self.group = group  # entry-point group (None: built-ins only)
        self._builtin_module = builtin_module  # imported on first use; registers the built-ins
        self._check = check
        self._items: dict[str, T] = {}
        self._providers: dict[str, str] = {}  # name -> who registered it (for collision messages)
        self._broken: dict[str, str] = {}  # name -> why it cannot be used
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@CONNECTORS.register("mlp")`."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T, provider: str | None = None) -> None:
        plain = "".join(c for c in name if c not in self._punctuation) if isinstance(name, str) else ""
        if not isinstance(name, str) or not name or not plain.isalnum() or ".." in name:
            chars = [f"'{c}'" for c in self._punctuation]
            allowed = ", ".join(["letters", "digits", *chars[:-1]]) + f" and {chars[-1]}"
            raise AlignBenchError(f"invalid {self.kind} name {name!r}: use {allowed}")
        provider = provider or _module_of(obj)
        if name in self._items and self._items[name] is not obj:
            raise AlignBenchError(
                f"{self.kind} {name!r} is registered twice: by {self._providers[name]} and by "
                f"{provider}; rename one of them"
            )
        problem = self._check(obj) if self._check is not None else None
        if problem:
            raise AlignBenchError(f"{self.kind} {name!r} from {provider} {problem}")
        if hasattr(obj, "name"):
            try:
                obj.name = name
            except AttributeError:
                pass
        self._items[name] = obj
        self._providers[name] = provider

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import importlib

        importlib.import_module(self._builtin_module)
        for ep in metadata.entry_points(group=self.group) if self.group else ():
            provider = _provider(ep)
            if ep.name in self._broken:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # any import error of a plug-in is recorded: one clear message when used
                self._broken[ep.name] = (
                    f"the {self.kind} plug-in {ep.name!r} from {provider} failed to import "
                    f"({type(exc).__name__}: {exc}); fix it or {_uninstall(ep)}"
                )
                continue
            if ep.name in self._items and self._items[ep.name] is not obj:
                self._broken[ep.name] = (
                    f"{self.kind} {ep.name!r} is claimed by {self._providers[ep.name]} and by "
                    f"{provider}; {_uninstall(ep)} or rename its entry point"
                )
                continue
            try:
                self.add(ep.name, obj, provider)
            except AlignBenchError as exc:
                self._broken[ep.name] = f"{exc}; fix it or {_uninstall(ep)}"

    def get(self, name: str) -> T:
        self._load()
        if name in self._broken:
            raise AlignBenchError(self._broken[name])
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise AlignBenchError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        """The usable names (broken plug-ins left out: `broken()`)."""
        self._load()
        return sorted(n for n in self._items if n not in self._broken)

    def builtins(self) -> list[str]:
        """The built-in names, in the order their package registers them (the order tables list them)."""
        self._load()
        return [n for n, who in self._providers.items() if who.startswith("the built-in module")]

    def broken(self) -> dict[str, str]:
        """Installed plug-ins that cannot be used, by name: why, and the fix."""
        self._load()
        return dict(self._broken)

    def provider(self, name: str) -> str:
        self._load()
        return self._providers.get(name, "")

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items and name not in self._broken


_PLUGIN_FILES: dict[str, str] = {}  # module name given to a --plugin file -> the path the user gave


def note_plugin_module(module: str, path: str) -> None:
    """Name the --plugin file behind a module, so that messages about what it registers name the file."""
    _PLUGIN_FILES[module] = path


def _module_of(obj) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    if module in _PLUGIN_FILES or module.split(".")[0] in _PLUGIN_FILES:
        return f"the plug-in {_PLUGIN_FILES.get(module) or _PLUGIN_FILES[module.split('.')[0]]!r} (--plugin)"
    if module.startswith("alignbench."):
        return f"the built-in module {module}"
    return f"module {module}"


def import_modules(package: str, path: list[str], first: tuple[str, ...] = ()) -> None:
    """Import every module of a built-in package (`connectors/`, `tasks/`), so a new built-in is one new file:
    the modules named in `first` in that order, then the others by name. Import order is registration order,
    the order in which tables list them."""
    import importlib
    import pkgutil

    found = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    for name in [n for n in first if n in found] + [n for n in found if n not in first]:
        importlib.import_module(f"{package}.{name}")
