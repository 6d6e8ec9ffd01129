"""What every configuration module shares: seeds, and rebuilding a dataclass from a dumped config.json."""

from __future__ import annotations

import dataclasses

from ..errors import AlignBenchError

MAX_SEED = 2**32 - 1  # numpy's seeds; torch's would go to 2**64 - 1


def check_seed(value, flag: str) -> None:
    """A seed is an integer in [0, 2**32 - 1]; anything else is one message naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise AlignBenchError(f"{flag} must be an integer from 0 to {MAX_SEED}, got {value!r}")


def from_fields(cls, values: dict):
    """`cls(**values)` for a dataclass, refusing names it does not have (a config from a newer version)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AlignBenchError(
            f"the saved configuration has {cls.__name__} field(s) {unknown} this version does not "
            "know; use the AlignBench version that wrote it"
        )
    return cls(**values)


# ---------------------------------------------------------------- the command line, declared beside each field
# `alignbench.cli.options` turns every field declared with `opt` into an option of the commands whose configuration
# holds it: its flag (the field's name, or `flag`), its help and its default are stated here once.


def opt(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    example: str | None = None,
    recipe: bool = False,
    repeat: bool = False,
):
    """A field that is a command-line option.

    `flag`: the option's name when it is not the field's; `example`: shown when a value does not parse (KEY=VALUE
    pairs, comma-separated lists); `recipe`: left out on the command line, the backbone's recipe
    (`alignbench.train.recipes`) decides, else `default`; `repeat`: a list given by repeating the option rather than
    as comma-separated text. No default: the option is required."""
    if not help:
        raise ValueError("an option needs its help")
    metadata = {"help": help, "flag": flag, "example": example, "recipe": recipe, "repeat": repeat}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def group(cls, *, only: tuple[str, ...] = (), skip: tuple[str, ...] = ()):
    """A nested configuration whose options are the command's own (all of them, `only` these, or all but `skip`;
    `skip` may name a nested field as "data.seed")."""
    return dataclasses.field(default_factory=cls, metadata={"group": True, "only": only, "skip": skip})


def same_as(cls, name: str):
    """A field that is the option `cls.name` again, in another command's configuration: its default and help."""
    source = next(f for f in dataclasses.fields(cls) if f.name == name)
    metadata = {**source.metadata, "same_as": f"{cls.__qualname__}.{name}"}
    if source.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=source.default_factory, metadata=metadata)
    return dataclasses.field(default=source.default, metadata=metadata)


def comma_list(text: str, flag: str, kind: type = str, example: str | None = None) -> list:
    """`--FLAG a,b,c` as a list of `kind`; an empty list or a value that is not a `kind` is one message."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise AlignBenchError(f"--{flag} is empty; give a comma-separated list")
    try:
        return [kind(v) for v in items]
    except ValueError:
        what = {int: "integers", float: "numbers"}.get(kind, f"{kind.__name__} values")
        raise AlignBenchError(f"--{flag} {text!r} must be comma-separated {what}, e.g. {example}") from None


def key_values(pairs: list[str] | None, option: str, example: str) -> dict[str, str]:
    """Repeated `--OPTION KEY=VALUE` as a dict (text values); anything else is one message with an example."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise AlignBenchError(f"--{option} {p!r} is not KEY=VALUE (e.g. --{option} {example})")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
