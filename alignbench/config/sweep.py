"""Commands of many runs: which connectors and tasks (`Selection`), `alignbench sweep` (every connector x task pair,
over seeds, handed to a launcher) and `alignbench tune` (a learning-rate and option search). Their expansion into
run configurations is library code: `alignbench.run.sweep`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import group, opt
from .launch import LaunchConfig
from .run import RunConfig
from .session import DEFAULT_OUTPUT, Session

TASKS_DEFAULT = ["docvqa", "infovqa", "chartqa"]


@dataclass
class Selection:
    """The connectors (and tasks) a command of many runs covers, with their options."""

    connectors: list[str] = opt(["all"], "Comma-separated connectors; 'all': every built-in connector, in table order.")
    tasks: list[str] = opt(TASKS_DEFAULT, "Comma-separated tasks.")
    # Parsed per connector where the connectors are known (`alignbench.run.sweep.per_connector`)
    connector_args: list[str] = opt([], "CONNECTOR.OPTION=VALUE (repeatable).", flag="connector-arg", repeat=True)
    tuned: Path | None = opt(
        None,
        "An `alignbench tune` search table (lr_search.csv): each connector trains with its "
        "best trial's learning rate and options (--lr and --connector-arg still win).",
    )


@dataclass
class SweepCommand:
    """`alignbench sweep`: every connector x task pair on the same backbone, data and seed."""

    selection: Selection = group(Selection)
    # Every option of a run but what the sweep chooses itself (connector, task, training tasks) and the blind
    # baseline (every pair is scored with it)
    run: RunConfig = group(RunConfig, skip=("connector", "task", "connector_args", "eval.blind", "data.train_tasks"))
    train_tasks: list[str] | None = opt(
        None,
        "Tasks whose training splits train every connector (mixed, a step from "
        "each in turn); default: the sweep's tasks, so each connector trains once "
        "and is scored on every task. 'each': every pair trains on its own task's "
        "split.",
    )
    seeds: list[int] | None = opt(
        None,
        "Comma-separated seeds, each a full sweep (data seed s, init seed init_seed "
        "+ s); the table reports mean ± std over seeds.",
        example="0,1,2",
    )
    output: Path = opt(DEFAULT_OUTPUT, "Where run directories, leaderboard.csv and table.{csv,md} go.")
    launch: LaunchConfig = group(LaunchConfig)
    session: Session = group(Session)


@dataclass
class TuneCommand:
    """`alignbench tune`: per connector, each learning rate (and each combination of `--grid` option values) trained
    alike and scored on the task's held-out validation split."""

    selection: Selection = group(Selection, only=("connectors", "connector_args"))
    # The search's own learning rates replace --lr; the validation split is scored without the blind baseline
    run: RunConfig = group(RunConfig, skip=("connector", "connector_args", "eval.blind", "train.lr"))
    lrs: list[float] = opt([1e-3, 3e-3, 1e-2], "Comma-separated connector learning rates to try.", example="1e-3,3e-3")
    grid: list[str] = opt(
        [],
        "CONNECTOR.OPTION=V1,V2,... (repeatable): values of a connector option to try, each with every learning rate.",
        repeat=True,
    )
    jobs: int = opt(1, "Parallel worker processes (CPU: one per core is fastest).")
    output: Path = opt(DEFAULT_OUTPUT / "tune", "Where the search's runs and lr_search.{csv,md} go.")
    session: Session = group(Session, skip=("checkpoint_every",))
