"""The connector interface: every connector turns vision features [B, N, d] into LLM inputs [B, T, D].

A connector declares its hyper-parameters as a dataclass (`Config`), which is dumped beside every
result, and says how many tokens it emits for N patches (`num_tokens`); the model asserts that the
tokens it receives match. All dimensions come from the backbone through `ConnectorContext`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import AlignBenchError
from .registry import Registry


@dataclass
class ConnectorContext:
    vision_dim: int  # d: width of the vision tower's output
    llm_dim: int  # D: width of the LLM's input embeddings
    num_patches: int  # N: vision tokens per image (per tile when the backbone tiles images)
    llm: Any = None  # the causal LM (ALIGN reads its input embeddings and LM head)
    # With tiling, an image's features are its tiles' N patches each, concatenated (tile-major, the thumbnail
    # last): [B, t·N, d] for t tiles, at most `max_patches` patches; `num_tokens` is asked for t·N.
    max_patches: int | None = None
    # (rows, cols) of one tile's patches, row-major in the N features; None: the backbone does not say, and
    # `patch_grid` takes a square grid when N is a square.
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        if self.max_patches is None:
            self.max_patches = self.num_patches

    def patch_grid(self, connector: str) -> tuple[int, int]:
        """(rows, cols) of one tile's patch grid, for connectors that work on it spatially."""
        if self.grid is not None:
            rows, cols = self.grid
            if rows * cols != self.num_patches:
                raise AlignBenchError(
                    f"the backbone states a {rows} x {cols} patch grid but gives "
                    f"{self.num_patches} patches per tile; fix the backbone's grid"
                )
            return rows, cols
        side = math.isqrt(self.num_patches)
        if side * side != self.num_patches:
            raise AlignBenchError(
                f"connector {connector!r} works on the patch grid, but {self.num_patches} patches "
                "per tile is not a square and the backbone states no grid (a tower with a CLS "
                "token or a non-square input); use a connector that reads patches as a sequence "
                "(mlp, perceiver, ovis, align)"
            )
        return side, side

    def tiles_of(self, patches: int, connector: str) -> int:
        """How many tiles of N patches make `patches` (tiled pages concatenate their tiles' patches)."""
        if patches <= 0 or patches % self.num_patches:
            raise AlignBenchError(
                f"connector {connector!r} got {patches} patches, not a whole number of tiles of "
                f"{self.num_patches}; the features must be the tower's tiles, concatenated"
            )
        return patches // self.num_patches

    @property
    def vocab_size(self) -> int:
        return self.llm.get_input_embeddings().weight.shape[0]


class Connector(nn.Module):
    """Base class. Subclasses define `Config` (a dataclass), `__init__(ctx, config)` and `forward`."""

    name: ClassVar[str] = ""
    default_lr: ClassVar[float] = 3e-3  # used when the run gives no --lr (see `alignbench tune`)

    @dataclass
    class Config:
        pass

    def __init__(self, ctx: ConnectorContext, config: Any):
        super().__init__()
        self.ctx_dims = (ctx.vision_dim, ctx.llm_dim, ctx.num_patches)
        self.config = config

    def num_tokens(self, num_patches: int) -> int:
        """How many LLM input tokens this connector emits for `num_patches` vision tokens."""
        return num_patches

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d] -> [B, T, D]
        raise NotImplementedError

    def diagnostics(self, features: torch.Tensor) -> dict:
        """Optional statistics written to results.json (e.g. how peaked a softmax connector is)."""
        return {}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups; a connector may give some of its parameters another learning rate."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def on_llm_loaded(self, llm) -> None:
        """Called after a checkpoint's LLM is attached (connectors that read LLM weights re-bind here)."""


def _not_a_connector(obj) -> str | None:
    """What is wrong with `obj` as a connector (None: nothing)."""
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        return (
            f"is {type(obj).__name__} {obj!r:.60}, not a subclass of alignbench.connector.Connector "
            "(see README, Adding a connector)"
        )
    if not dataclasses.is_dataclass(getattr(obj, "Config", None)):
        return "has no dataclass `Config` of its options (decorate its nested Config with @dataclass)"
    return None


CONNECTORS: Registry[type[Connector]] = Registry(
    "connector", "alignbench.connectors", "alignbench.connectors", check=_not_a_connector
)


def connector_options(cls: type[Connector], args: dict[str, Any] | None) -> dict[str, Any]:
    """The typed values of a connector's options: text where they enter (`--connector-arg num_latents=32`, an old
    config.json) is parsed by field type, values already typed are checked. The one parser of connector options:
    configurations hold its result."""
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    values: dict[str, Any] = {}
    for key, raw in (args or {}).items():
        if key not in fields:
            known = ", ".join(fields) or "(none)"
            raise AlignBenchError(f"connector {cls.name!r} has no option {key!r}; its options: {known}")
        default = getattr(cls.Config(), key)
        try:
            values[key] = _typed(raw, default)
        except (TypeError, ValueError):
            raise AlignBenchError(f"connector option {key}={raw!r} is not a valid {type(default).__name__}") from None
    return values


def _typed(raw: Any, default: Any) -> Any:
    """`raw` as a value of `default`'s type: parsed from text, or checked (an int stands for a float)."""
    if default is None:
        return raw
    kind = type(default)
    if isinstance(raw, str) and kind is not str:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        return kind(raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if type(raw) is not kind:
        raise TypeError(raw)
    return raw


def parse_connector_args(cls: type[Connector], args: dict[str, Any] | None) -> Any:
    """`cls.Config` with the given options (`connector_options`), type-checked by field."""
    return cls.Config(**connector_options(cls, args))


def build_connector(
    name: str, ctx: ConnectorContext, args: dict[str, Any] | None = None, init_seed: int = 1234
) -> Connector:
    cls = CONNECTORS.get(name)
    config = parse_connector_args(cls, args)
    # The connector's initialisation has its own seed, apart from the data order's seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return cls(ctx, config)


def distribution_stats(probs: torch.Tensor) -> dict:
    """How peaked a per-token distribution [..., K] is: mean top probability, mean entropy (nats), and the
    number of entries whose mean probability over all tokens exceeds 1e-6."""
    probs = probs.flatten(0, -2).float()
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    return {
        "mean_top_prob": probs.max(-1).values.mean().item(),
        "mean_entropy": entropy.mean().item(),
        "support_1e-6": int((probs.mean(0) > 1e-6).sum().item()),
        "size": probs.shape[-1],
    }
