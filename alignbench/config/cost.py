"""What `alignbench cost` measures: which connectors, on which backbone and task, for how many steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AlignBenchError


@dataclass
class CostConfig:
    connectors: list[str] = field(default_factory=list)
    backbone: str = "tiny"
    task: str = "docvqa"
    tiles: int = 9  # the tiled page: this many tiles and a thumbnail (--max-tiles 9, as the paper tiles)
    train_steps: int = 4  # timed training steps (after one warm-up step)
    eval_samples: int = 32  # evaluation questions timed
    device: str = "auto"
    connector_args: dict[str, dict[str, str]] = field(default_factory=dict)  # per connector

    def validate(self) -> None:
        from ..connector import CONNECTORS, parse_connector_args  # registries: looked up when checked
        from ..task import TASKS

        if not self.connectors:
            raise AlignBenchError("--connectors is empty; give a comma-separated list or 'all'")
        for name in self.connectors:
            parse_connector_args(CONNECTORS.get(name), self.connector_args.get(name))
        TASKS.get(self.task)
        for flag, value in (("--tiles", self.tiles), ("--train-steps", self.train_steps),
                            ("--eval-samples", self.eval_samples)):
            if not isinstance(value, int) or value < 1:
                raise AlignBenchError(f"{flag} must be at least 1, got {value!r}")
