"""One run (a connector trained on a backbone and evaluated on a task), and the re-evaluation of a trained run.

A run's configuration is dumped to RUN_DIR/config.json (`dataclasses.asdict`) and rebuilt from it with
`RunConfig.from_dict`; the connector's options are stored there once, as typed values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AlignBenchError
from .backbone import BackboneConfig
from .base import from_fields, group, opt, same_as
from .data import DATA_HELP, DataConfig
from .eval import EvalConfig
from .parallel import ParallelConfig
from .session import DEFAULT_OUTPUT, Session
from .train import TrainConfig, connector_stage_sources

EVALUATORS = ("alignbench", "lmms-eval")


@dataclass
class RunConfig:
    connector: str = opt("align", "Connector name (see `alignbench list`).")
    task: str = opt("docvqa", "Task name (see `alignbench list`).")
    # The connector's options that differ from its defaults, typed (`alignbench.connector.connector_options`
    # parses `--connector-arg KEY=VALUE` text once, where it enters)
    connector_args: dict[str, Any] = opt(
        {}, "Connector option KEY=VALUE (repeatable).", flag="connector-arg", example="num_latents=32"
    )
    backbone: BackboneConfig = group(BackboneConfig)
    data: DataConfig = group(DataConfig)
    train: TrainConfig = group(TrainConfig)
    eval: EvalConfig = group(EvalConfig)
    device: str = opt("auto", "auto, cpu or cuda[:N].")
    parallel: ParallelConfig = group(ParallelConfig)  # several processes: DDP or FSDP

    @property
    def train_tasks(self) -> list[str]:
        """The tasks whose training splits train the connector (the evaluated task's by default)."""
        return list(self.data.train_tasks) if self.data.train_tasks else [self.task]

    def validate(self) -> None:
        # The registries are looked up here, not at import: importing a configuration never imports torch.
        from ..connector import CONNECTORS, connector_options
        from ..task import TASKS

        TASKS.get(self.task)
        for name in self.train_tasks:
            TASKS.get(name)
        if len(set(self.train_tasks)) != len(self.train_tasks):
            raise AlignBenchError(f"--train-tasks {','.join(self.train_tasks)} names a task twice; name each once")
        if self.data.train_source is not None and len(self.train_tasks) > 1:
            raise AlignBenchError(
                "--train-data names one training set, but --train-tasks names several tasks; "
                "leave --train-data out to train on each task's own training set"
            )
        connector_options(CONNECTORS.get(self.connector), self.connector_args)
        self.backbone.validate()
        self.data.validate()
        self.train.validate()
        connector_stage_sources(self.train, self.train_tasks)  # its tasks are among the training tasks
        self.parallel.validate()
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise AlignBenchError(f"unknown device {self.device!r}; use auto, cpu or cuda[:N]")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise AlignBenchError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")
        for split, names in (("train", self.train_tasks), (self.data.eval_split, [self.task])):
            if self.data.embedded_for(split):
                for name in names:
                    TASKS.get(name).embedded_set()  # a task without an embedded set: one message

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Rebuild from a dumped config.json (fields added since it was written take their defaults). Files written
        before the options were typed hold them as text: their typed values are the ones the run used, which its
        `connector_config` records."""
        return cls(
            connector=d["connector"],
            task=d["task"],
            connector_args=_typed_args(d),
            backbone=from_fields(BackboneConfig, d["backbone"]),
            data=from_fields(DataConfig, d["data"]),
            train=from_fields(TrainConfig, d["train"]),
            eval=from_fields(EvalConfig, d["eval"]),
            device=d.get("device", "auto"),
            parallel=from_fields(ParallelConfig, d.get("parallel", {})),
        )


def option_text(value: Any) -> str:
    """A connector option's value as `--connector-arg` takes it (10.0 -> "10", True -> "true"): how the leaderboard
    and a search table write the options."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def read_saved_config(run_dir: Path) -> dict:
    """RUN_DIR/config.json as it was saved: the one reader of that file. A folder without one, or with one that is
    not a JSON object, is one message."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise AlignBenchError(
            f"{str(run_dir)!r} is not a run directory (no config.json); give OUTPUT/runs/RUN_ID, "
            "as printed when the run started"
        )
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AlignBenchError(f"{path} is not an AlignBench run config ({type(exc).__name__}: {exc})") from None
    if not isinstance(saved, dict):
        raise AlignBenchError(f"{path} is not an AlignBench run config (it holds a {type(saved).__name__})")
    return saved


def _typed_args(saved: dict) -> dict[str, Any]:
    args, used = dict(saved.get("connector_args") or {}), saved.get("connector_config") or {}
    return {k: used[k] if isinstance(v, str) and k in used else v for k, v in args.items()}


@dataclass
class CheckpointEvalConfig:
    """`alignbench eval`: score a trained run's weights on a task, with AlignBench's evaluation or lmms-eval's."""

    checkpoint: str  # the run directory (config.json + connector.safetensors [+ llm.safetensors])
    task: str
    evaluator: str = "alignbench"  # "alignbench" or "lmms-eval"
    data: DataConfig = field(default_factory=DataConfig)  # the evaluation source (and --limit)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    lmms_task: str | None = None  # lmms-eval's task definition (default: the task's `lmms_eval_task`)
    include_path: str | None = None  # more lmms-eval task folders (YAML), as lmms-eval's --include_path


# ---------------------------------------------------------------- the commands: `alignbench run` and `alignbench eval`


@dataclass
class RunCommand:
    """`alignbench run`: one run's configuration (every option of it), and what the command does around it."""

    run: RunConfig = group(RunConfig)
    output: Path = opt(DEFAULT_OUTPUT, "Where run directories and leaderboard.csv go.")
    resume: Path | None = opt(
        None, "Continue an interrupted run: its directory OUTPUT/runs/RUN_ID, with the configuration saved there."
    )
    session: Session = group(Session, skip=("reuse_from",))


@dataclass
class EvalCommand:
    """`alignbench eval`: which trained run, scored on what and by which evaluator (`CheckpointEvalConfig` once the
    run's own configuration is read)."""

    checkpoint: Path = opt(
        help="A run directory (OUTPUT/runs/RUN_ID) with its config.json and trained weights; the "
        "model is rebuilt from it alone."
    )
    task: str | None = opt(None, "Task to score (default: the task the run trained on).")
    via: str = opt(
        "alignbench",
        "'alignbench' (this project's evaluation) or 'lmms-eval' (lmms-eval's task "
        "definition, in this process; needs the lmms-eval extra).",
    )
    data: str | None = opt(None, DATA_HELP + " Default: the run's own evaluation source.")
    limit: int | None = same_as(DataConfig, "eval_limit")
    output: Path | None = opt(
        None, "Where the evaluation's directory and leaderboard row go (default: the run's own output directory)."
    )
    lmms_task: str | None = opt(
        None, "lmms-eval task whose definition scores it (default: the task's counterpart, e.g. docvqa_val)."
    )
    include_path: str | None = opt(None, "Folder of extra lmms-eval task YAML files (lmms-eval's --include_path).")
    device: str = same_as(RunConfig, "device")
    eval: EvalConfig = group(EvalConfig)
    session: Session = group(Session, only=("plugins",))
