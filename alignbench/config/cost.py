"""What `alignbench cost` measures: which connectors, on which backbone and task, for how many steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AlignBenchError
from .backbone import BackboneConfig
from .base import group, opt, same_as
from .run import RunConfig
from .session import DEFAULT_OUTPUT, Session
from .sweep import Selection


@dataclass
class CostConfig:
    connectors: list[str] = field(default_factory=list)
    backbone: str = same_as(BackboneConfig, "name")
    task: str = opt("docvqa", "Task whose pages are trained on and evaluated.")
    # The paper tiles a page into 9 (--max-tiles 9)
    tiles: int = opt(9, "Tiles of the tiled page (plus its thumbnail).")
    train_steps: int = opt(4, "Training steps timed (after one warm-up step).")
    eval_samples: int = opt(32, "Evaluation questions timed.")
    device: str = same_as(RunConfig, "device")
    connector_args: dict[str, dict[str, str]] = field(default_factory=dict)  # per connector

    def validate(self) -> None:
        from ..connector import CONNECTORS, parse_connector_args  # registries: looked up when checked
        from ..task import TASKS

        if not self.connectors:
            raise AlignBenchError("--connectors is empty; give a comma-separated list or 'all'")
        for name in self.connectors:
            parse_connector_args(CONNECTORS.get(name), self.connector_args.get(name))
        TASKS.get(self.task)
        for flag, value in (
            ("--tiles", self.tiles),
            ("--train-steps", self.train_steps),
            ("--eval-samples", self.eval_samples),
        ):
            if not isinstance(value, int) or value < 1:
                raise AlignBenchError(f"{flag} must be at least 1, got {value!r}")


@dataclass
class CostCommand:
    """`alignbench cost`: the connectors to measure (with their options), the measurement, where it goes."""

    selection: Selection = group(Selection, only=("connectors", "connector_args"))
    cost: CostConfig = group(CostConfig)
    output: Path = opt(DEFAULT_OUTPUT, "Where cost.{csv,md,json} go (the report reads them there).")
    session: Session = group(Session, only=("plugins",))
