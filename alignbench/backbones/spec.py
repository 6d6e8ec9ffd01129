"""What the prepared backbones are made of: `Net`, one small transformer's size and pretraining schedule, and the
flat form of a config that nests such groups (the form its content key and manifest are written in, so a group's
`vision.hidden` is `vision_hidden` there: a content key does not depend on how the fields are grouped)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

C = TypeVar("C")


@dataclass
class Net:
    """A small transformer that a backbone builds and pretrains itself."""

    hidden: int
    layers: int
    heads: int
    mlp: int
    steps: int  # pretraining steps
    batch: int
    lr: float

    def siglip(self, rows: int, cols: int, patch: int):
        """A SigLIP vision tower of this size for pages of rows x cols patches."""
        from transformers import SiglipVisionConfig, SiglipVisionModel

        if rows != cols:
            raise ValueError(f"a SigLIP tower takes square pages; got {rows} x {cols} cells")
        return SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=self.hidden,
                intermediate_size=self.mlp,
                num_hidden_layers=self.layers,
                num_attention_heads=self.heads,
                image_size=rows * patch,
                patch_size=patch,
                num_channels=3,
            )
        )


def _groups(cls) -> dict[str, tuple[str, Any]]:
    """A config class's nested groups: field name -> (prefix of its flat keys, default value)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if dataclasses.is_dataclass(default):
                out[f.name] = (f.metadata.get("prefix", f"{f.name}_"), default)
    return out


def flat(cfg) -> dict[str, Any]:
    """The config's fields with every nested group spread out under its prefix."""
    groups = _groups(type(cfg))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in groups:
            out.update({groups[f.name][0] + k: v for k, v in dataclasses.asdict(value).items()})
        else:
            out[f.name] = value
    return out


def from_flat(cls: type[C], values: dict[str, Any]) -> C:
    """The config that `flat` wrote as `values` (a group's keys that are missing keep their defaults)."""
    kwargs = dict(values)
    for name, (prefix, default) in _groups(cls).items():
        inner = {f.name: kwargs.pop(prefix + f.name) for f in dataclasses.fields(default) if prefix + f.name in kwargs}
        kwargs[name] = dataclasses.replace(default, **inner)
    return cls(**kwargs)


def replace_flat(cfg: C, **changes: Any) -> C:
    """`cfg` with some of its flat keys changed: `replace_flat(cfg, vision_steps=2)`."""
    return from_flat(type(cfg), {**flat(cfg), **changes})
