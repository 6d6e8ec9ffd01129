"""How a connector is trained: stage, budget, optimiser settings and seeds (`alignbench.train.loop` trains it)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass

from ..errors import AlignBenchError
from .base import check_seed, opt
from .parallel import batch_layout

STAGES = ("connector", "full", "lora")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    stage: str = opt(
        "connector",
        "What trains besides the connector: 'connector' (nothing), 'lora' (LoRA adapters on "
        "the LLM, through peft) or 'full' (the whole LLM)",
        recipe=True,
    )
    # The default budget of every run (a sweep's mixture included)
    steps: int = opt(
        750, "Training steps (the same budget for every connector, whatever the training tasks)", recipe=True
    )
    # Each page carries up to `questions_per_page` questions
    batch_size: int = opt(16, "Pages per training step, all processes together", recipe=True)
    # None: batch_size / processes / grad_accum. Gradient accumulation fills the difference, so the step (batch_size
    # pages) is the same for any number of processes.
    micro_batch_size: int | None = opt(
        None,
        "Pages per forward pass on each process; gradient accumulation fills "
        "--batch-size (= processes x accumulation x micro-batch). Default: no "
        "accumulation.",
    )
    # None: from micro_batch_size (or 1)
    grad_accum: int | None = opt(
        None, "Micro-batches accumulated per step on each process (instead of --micro-batch-size)."
    )
    questions_per_page: int = 8  # 1 = one question per sequence
    lr: float | None = opt(None, "Connector learning rate (default: the connector's own).")
    llm_lr: float = opt(1e-4, "LLM learning rate (stages lora and full).")
    # The LLM's steps have a warmup + cosine schedule of their own (warmup: a tenth of them); the steps before are the
    # connector stage.
    llm_steps: int | None = opt(
        None,
        "With --stage lora or full: the LLM trains in the last N steps only, after a "
        "connector stage (default: every step, or the backbone recipe's share of the steps).",
    )
    # None: every step from every task (step k from task k mod n).
    connector_tasks: list[str] | None = opt(
        None,
        "Comma-separated training tasks the connector stage (the steps "
        "before --llm-steps) draws from; the LLM stage draws from every training "
        "task (default: every task throughout, or the backbone recipe's).",
    )
    lora_rank: int = 16  # stage `lora`: rank of the LoRA update, its scale alpha / rank, and the layers it adapts
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"
    warmup_steps: int = 40
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    init_seed: int = opt(1234, "Connector initialisation seed.")
    # Not part of the training key: it does not change the weights.
    report_to: str = opt(
        "none",
        "Also stream each run's training curve (loss, learning rates) live: none, tensorboard "
        "(RUN_DIR/tensorboard) or wandb; the curve is always kept in RUN_DIR/train_curve.csv.",
    )

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise AlignBenchError(f"unknown stage {self.stage!r}; known stages: {', '.join(STAGES)}")
        for name in ("steps", "batch_size", "questions_per_page"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AlignBenchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)!r}")
        check_seed(self.init_seed, "--init-seed")
        check_report_to(self.report_to)
        for flag, value in (("--lr", self.lr), ("--llm-lr", self.llm_lr)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise AlignBenchError(f"{flag} must be a positive number, got {value!r}")
        for name in ("warmup_steps",):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise AlignBenchError(f"{name} must be 0 or more, got {getattr(self, name)!r}")
        if not (
            math.isfinite(self.weight_decay)
            and self.weight_decay >= 0
            and math.isfinite(self.grad_clip)
            and self.grad_clip > 0
        ):
            raise AlignBenchError(
                f"weight_decay must be >= 0 and grad_clip > 0, got {self.weight_decay!r} and {self.grad_clip!r}"
            )
        if self.llm_steps is not None:
            if self.stage == "connector":
                raise AlignBenchError("--llm-steps needs a stage in which the LLM trains: --stage full or lora")
            if not 1 <= self.llm_steps <= self.steps:
                raise AlignBenchError(f"--llm-steps must be between 1 and --steps ({self.steps}), got {self.llm_steps}")
        if self.connector_tasks is not None and (
            not isinstance(self.connector_tasks, list) or not self.connector_tasks
        ):
            raise AlignBenchError(
                f"--connector-tasks must name at least one training task, got {self.connector_tasks!r}"
            )
        if self.stage == "lora" and not (self.lora_rank >= 1 and self.lora_alpha > 0):
            raise AlignBenchError(
                f"--lora-rank must be at least 1 and --lora-alpha positive, got {self.lora_rank} and {self.lora_alpha}"
            )

    def llm_start(self) -> int:
        """The first step in which the LLM trains (`steps`: never)."""
        if self.stage == "connector":
            return self.steps
        return self.steps - (self.llm_steps if self.llm_steps is not None else self.steps)

    def key_fields(self) -> dict:
        """The fields that decide the trained weights, without the LoRA options of a run without LoRA and without
        `llm_steps` left at None (so the keys of runs that predate them stay the same)."""
        fields = asdict(self)
        fields.pop("report_to")
        if self.stage != "lora":
            for name in ("lora_rank", "lora_alpha", "lora_targets"):
                fields.pop(name)
        if self.llm_steps is None:
            fields.pop("llm_steps")
        if self.connector_tasks is None:
            fields.pop("connector_tasks")
        return fields

    def layout(self, world_size: int) -> tuple[int, int]:
        """(micro-batch size, accumulation steps) on `world_size` processes; a layout that does not divide
        is one message."""
        return batch_layout(self.batch_size, self.micro_batch_size, self.grad_accum, world_size)


def connector_stage_sources(cfg: TrainConfig, names: list[str]) -> list[int] | None:
    """The indices (into the training sources `names`) the connector stage draws from; None: every source."""
    if cfg.connector_tasks is None:
        return None
    missing = [t for t in cfg.connector_tasks if t not in names]
    if missing:
        raise AlignBenchError(
            f"--connector-tasks {','.join(missing)} is not among the training tasks "
            f"({','.join(names)}); add it to --train-tasks or leave it out"
        )
    return [names.index(t) for t in cfg.connector_tasks]


def check_report_to(value: str) -> None:
    if value not in REPORT_TO:
        raise AlignBenchError(f"--report-to {value!r} is not one of {', '.join(REPORT_TO)}")
    for package in ("accelerate", value) if value != "none" else ():  # a tracker's package has the tracker's name
        if importlib.util.find_spec(package) is None:
            raise AlignBenchError(
                f"--report-to {value} needs the {package} package: pip install "
                f"'alignbench[track]' (or pip install {package}), or use --report-to none"
            )
