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
        raise AlignBenchError(f"the saved configuration has {cls.__name__} field(s) {unknown} this version does not "
                              "know; use the AlignBench version that wrote it")
    return cls(**values)
