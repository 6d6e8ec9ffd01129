"""How a connector is trained: stage, budget, optimiser settings and seeds (`alignbench.train.loop` trains it)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass

from ..errors import AlignBenchError
from .base import check_seed
from .parallel import batch_layout

STAGES = ("connector", "full", "lora")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    stage: str = "connector"
    steps: int = 750  # the default budget of every run (a sweep's mixture included): 750 steps of 16 pages
    batch_size: int = 16  # pages per step, all processes together (each with up to `questions_per_page` questions)
    # Pages per forward pass on each process; None: batch_size / processes / grad_accum. Gradient accumulation
    # fills the difference, so the step (batch_size pages) is the same for any number of processes.
    micro_batch_size: int | None = None
    grad_accum: int | None = None  # micro-batches per step on each process; None: from micro_batch_size (or 1)
    questions_per_page: int = 8  # 1 = one question per sequence
    lr: float | None = None  # connector learning rate; None = the connector's `default_lr`
    llm_lr: float = 1e-4  # LLM learning rate in stages `full` and `lora`
    # Stages `full` and `lora`: the LLM trains in the last `llm_steps` steps only, with a warmup + cosine schedule
    # of its own (warmup: a tenth of them); the steps before are the connector stage. None: every step.
    llm_steps: int | None = None
    # The training tasks the connector stage (the steps before `llm_steps`) draws its pages from, in turn; the LLM
    # stage draws from every training task. None: every step from every task (step k from task k mod n).
    connector_tasks: list[str] | None = None
    lora_rank: int = 16  # stage `lora`: rank of the LoRA update, its scale alpha / rank, and the layers it adapts
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"
    warmup_steps: int = 40
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    init_seed: int = 1234  # connector initialisation; the data seed lives in DataConfig
    # Where the curve streams live besides RUN_DIR/train_curve.csv: none, tensorboard or wandb (not part of the
    # training key: it does not change the weights).
    report_to: str = "none"

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
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0 and math.isfinite(self.grad_clip)
                and self.grad_clip > 0):
            raise AlignBenchError(f"weight_decay must be >= 0 and grad_clip > 0, got {self.weight_decay!r} and "
                                  f"{self.grad_clip!r}")
        if self.llm_steps is not None:
            if self.stage == "connector":
                raise AlignBenchError("--llm-steps needs a stage in which the LLM trains: --stage full or lora")
            if not 1 <= self.llm_steps <= self.steps:
                raise AlignBenchError(f"--llm-steps must be between 1 and --steps ({self.steps}), got {self.llm_steps}")
        if self.connector_tasks is not None and (not isinstance(self.connector_tasks, list)
                                                 or not self.connector_tasks):
            raise AlignBenchError("--connector-tasks must name at least one training task, got "
                                  f"{self.connector_tasks!r}")
        if self.stage == "lora" and not (self.lora_rank >= 1 and self.lora_alpha > 0):
            raise AlignBenchError(f"--lora-rank must be at least 1 and --lora-alpha positive, got {self.lora_rank} "
                                  f"and {self.lora_alpha}")

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
        raise AlignBenchError(f"--connector-tasks {','.join(missing)} is not among the training tasks "
                              f"({','.join(names)}); add it to --train-tasks or leave it out")
    return [names.index(t) for t in cfg.connector_tasks]


def check_report_to(value: str) -> None:
    if value not in REPORT_TO:
        raise AlignBenchError(f"--report-to {value!r} is not one of {', '.join(REPORT_TO)}")
    for package in ("accelerate", value) if value != "none" else ():  # a tracker's package has the tracker's name
        if importlib.util.find_spec(package) is None:
            raise AlignBenchError(f"--report-to {value} needs the {package} package: pip install "
                                  f"'alignbench[track]' (or pip install {package}), or use --report-to none")
