"""The command line generated from the configuration dataclasses: every field declared with `opt` (alignbench.config)
is an option, its flag, help and default stated there once; nested configurations declared with `group` are
flattened (their options are the command's own). A command is a function of its configuration:

    @generated(RunCommand)
    def run(ctx, cmd: RunCommand): ...

Types: int, float, str, bool (--x/--no-x), Path, Optional of these; list[T] is comma-separated text (`repeat`: the
option repeated), dict[str, str] repeated KEY=VALUE pairs. Imports only the configuration modules and typer, so
`alignbench --help` starts without torch."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ..config.base import comma_list, key_values
from ..train.recipes import RECIPES

SCALARS = (int, float, str, bool, Path)


@dataclass(frozen=True)
class Flag:
    """One option: the field it comes from and how its text becomes the field's value."""

    param: str  # the Python parameter name (the flag with "_" for "-")
    path: tuple[str, ...]  # field names from the command's configuration down to the field
    field: dataclasses.Field
    source: str  # "Class.field" the option is defined by (its help and default)
    kind: str  # "scalar", "comma", "repeat" or "pairs"
    item: type  # the value's type (a list's items)
    optional: bool

    @property
    def flag(self) -> str:
        return "--" + self.param.replace("_", "-")

    @property
    def help(self) -> str:
        text = self.field.metadata["help"]
        if self.field.metadata.get("recipe"):  # left out: the backbone's recipe, else the default
            stated = [
                f"{name}: {recipe[self.field.name]}" for name, recipe in RECIPES.items() if self.field.name in recipe
            ]
            text = (
                text.rstrip(".")
                + f"; default: {self.field.default}"
                + (f" ({', '.join(stated)})" if stated else "")
                + "."
            )
        return text

    def typer_param(self) -> tuple[Any, Any]:
        """(annotation, typer.Option) of the generated parameter."""
        f = self.field
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = ... if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if self.kind == "scalar":
            annotation = self.item | None if self.optional or f.metadata.get("recipe") else self.item
            value = None if f.metadata.get("recipe") else default
        elif self.kind == "comma":
            annotation = str | None if default is None else str
            value = (
                None
                if default is None
                else ",".join(format(v, "g") if isinstance(v, float) else str(v) for v in default)
            )
        else:  # repeated: nothing given is the field's default (empty)
            item = self.item if self.kind == "repeat" else str  # "pairs": KEY=VALUE text
            annotation, value = list[item] | None, None
        return annotation, typer.Option(value, help=escape(self.help))  # help is rich markup: show [...] as is

    def value(self, given: Any) -> Any:
        """The field's value from what typer parsed."""
        meta = self.field.metadata
        if self.kind == "comma" and given is not None:
            return comma_list(given, self.param.replace("_", "-"), self.item, meta.get("example"))
        if self.kind == "repeat":
            return list(given or [])
        if self.kind == "pairs":
            return key_values(given, self.param.replace("_", "-"), meta.get("example") or "KEY=VALUE")
        return given


def _split(annotation) -> tuple[Any, bool]:
    """(annotation without None, whether None was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _flag(path: tuple[str, ...], owner: type, f: dataclasses.Field, annotation) -> Flag:
    meta = f.metadata
    bare, optional = _split(annotation)
    origin = typing.get_origin(bare)
    if origin is list:
        (item,) = typing.get_args(bare)
        kind = "repeat" if meta.get("repeat") else "comma"
    elif origin is dict:
        item, kind = str, "pairs"
    else:
        item, kind = bare, "scalar"
    if item not in SCALARS:
        raise TypeError(f"{owner.__qualname__}.{f.name}: options of type {annotation!r} are not supported")
    param = (meta.get("flag") or f.name).replace("-", "_")
    return Flag(param, path, f, meta.get("same_as") or f"{owner.__qualname__}.{f.name}", kind, item, optional)


@functools.cache
def flags(
    cls: type, only: tuple[str, ...] = (), skip: tuple[str, ...] = (), path: tuple[str, ...] = ()
) -> tuple[Flag, ...]:
    """Every option of configuration `cls`, nested groups flattened, in field order."""
    hints = typing.get_type_hints(cls)
    out: list[Flag] = []
    for f in dataclasses.fields(cls):
        if (only and f.name not in only) or f.name in skip:
            continue
        if f.metadata.get("group"):
            inner_skip = tuple(s.split(".", 1)[1] for s in skip if s.startswith(f.name + "."))
            out += flags(hints[f.name], f.metadata["only"], f.metadata["skip"] + inner_skip, (*path, f.name))
        elif "help" in f.metadata:
            out.append(_flag((*path, f.name), cls, f, hints[f.name]))
    seen: dict[str, Flag] = {}
    for flag in out:
        if flag.param in seen:
            raise TypeError(
                f"{cls.__qualname__}: {flag.flag} is declared twice ({seen[flag.param].source} and {flag.source})"
            )
        seen[flag.param] = flag
    return tuple(out)


def build(cls: type, values: dict[str, Any], only: tuple[str, ...] = (), skip: tuple[str, ...] = ()):
    """The configuration `cls` from the parsed options `values` (by parameter name); fields that are no option of
    this command keep their defaults."""
    given: dict[tuple[str, ...], Any] = {f.path: f.value(values[f.param]) for f in flags(cls, only, skip)}
    return _build(cls, (), given)


def _build(cls: type, path: tuple[str, ...], given: dict[tuple[str, ...], Any]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = (*path, f.name)
        if f.metadata.get("group"):
            kwargs[f.name] = _build(hints[f.name], key, given)
        elif key in given:
            kwargs[f.name] = given[key]
    return cls(**kwargs)


# Every generated command: its callback -> (configuration class, only, skip), for `parse` and the tests.
COMMANDS: dict[Any, tuple[type, tuple[str, ...], tuple[str, ...]]] = {}


def generated(cls: type, *, only: tuple[str, ...] = (), skip: tuple[str, ...] = ()):
    """Decorator: a typer command whose options are `cls`'s, calling the function with the built configuration
    (after the click context, when the function's first parameter is `ctx`)."""

    def wrap(fn):
        wants_ctx = next(iter(inspect.signature(fn).parameters)) == "ctx"

        def callback(ctx: typer.Context, **values):
            cfg = build(cls, values, only, skip)
            return fn(ctx, cfg) if wants_ctx else fn(cfg)

        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        for flag in flags(cls, only, skip):
            annotation, option = flag.typer_param()
            params.append(
                inspect.Parameter(
                    flag.param, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=annotation
                )
            )
        callback.__signature__ = inspect.Signature(params)
        callback.__annotations__ = {p.name: p.annotation for p in params}
        callback.__name__, callback.__qualname__, callback.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        callback.__module__ = fn.__module__
        COMMANDS[callback] = (cls, only, skip)
        return callback

    return wrap


def parse(app: typer.Typer, argv: list[str]):
    """The configuration a command line builds, without running the command: `parse(app, ["run", "--steps", "3"])`."""
    command = typer.main.get_command(app)
    names = list(argv)
    while hasattr(command, "commands"):
        command = command.commands[names.pop(0)]
    ctx = command.make_context(command.name, names)
    callback = command.callback
    while callback not in COMMANDS and hasattr(callback, "__wrapped__"):
        callback = callback.__wrapped__
    cls, only, skip = COMMANDS[callback]
    return build(cls, ctx.params, only, skip)
