"""What the commands share: the consoles, progress bars and result tables, plug-ins, the process group of a
launcher, and running many configurations (in this process, in worker processes, or through a launcher)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..config.session import DEFAULT_CHECKPOINT_EVERY
from ..errors import AlignBenchError

console = Console()
err_console = Console(stderr=True)


def echo(*args, **kwargs) -> None:
    """Print on the command's console (looked up at each call, so a test may give it another width)."""
    console.print(*args, **kwargs)


def quiet() -> None:
    """Before a command loads models: our own progress bars and messages replace the libraries' loading bars."""
    from ..run.workspace import quiet_libraries

    quiet_libraries()


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def load_plugins(paths: list[Path]) -> None:
    """`--plugin PATH` (repeatable): import each file or package directory, which registers its connectors
    and tasks. The only way, besides installed entry points, that code is loaded."""
    from ..plugins import load_plugin

    for path in paths:
        load_plugin(path)


def is_main() -> bool:
    from ..dist.context import context

    return context().is_main


def start_processes(configs: list, device: str):
    """Check what every process would refuse alike (the batch layout, the strategy) before the processes meet,
    then join the process group the launcher described; processes other than rank 0 print nothing."""
    from ..dist.context import env_layout, init_from_env, resolve_parallel

    world = env_layout()[1]
    for cfg in configs:
        cfg.train.layout(world)
        resolve_parallel(cfg.parallel)
    dist = init_from_env(device)
    if not dist.is_main:
        console.quiet = True
    return dist


def result_table(results: list[dict]) -> Table:
    table = Table(title="AlignBench results")
    for col in ("connector", "task", "metric", "score", "± stderr", "n", "blind", "train s", "run"):
        table.add_column(col)
    for r in results:
        blind = r.get("blind", {}).get("score")
        table.add_row(
            r["connector"],
            r["task"],
            r["metric"],
            f"{100 * r['score']:.1f}",
            f"{100 * r['stderr']:.1f}",
            str(r["n"]),
            "–" if blind is None else f"{100 * blind:.1f}",
            f"{r['train_seconds']:.0f}",
            Path(r["run_dir"]).name,
        )
    return table


def execute(
    configs: list,
    output: Path,
    jobs: int,
    device: str,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    feature_cache: bool = True,
    reuse_from: list[Path] | None = None,
) -> list[dict]:
    """Run configs in order, in this process (with progress bars) or in `jobs` worker processes."""
    from ..dist.context import context
    from ..plugins import loaded_plugins
    from ..run.outputs import prepare_output
    from ..run.pipeline import run as run_pipeline
    from ..run.reuse import check_reuse_source
    from ..run.workspace import Workspace, resolve_device
    from ..task import TASKS

    if jobs < 1:
        raise AlignBenchError(f"--jobs must be at least 1, got {jobs}")
    reuse_from = [check_reuse_source(Path(r)) for r in reuse_from or []]
    start_processes(configs, device)
    if jobs > 1 and context().enabled:
        raise AlignBenchError(
            "--jobs above 1 starts worker processes, which cannot join torchrun's; under torchrun or "
            "accelerate launch the runs go one after the other on all processes (--jobs 1)"
        )
    if jobs > 1 and loaded_plugins():
        raise AlignBenchError(
            "a --plugin is imported in this process only; use --jobs 1, or install the plug-in "
            "as a package (entry point) to run it in worker processes"
        )
    for cfg in configs:  # fail before any work if any job is invalid
        cfg.validate()
    ws = Workspace(configs[0].backbone, configs[0].data, resolve_device(device), echo, feature_cache)
    if jobs == 1:
        results = []
        with progress() as bars:
            for cfg in configs:
                echo(f"[bold]{cfg.connector} on {cfg.task} (lr {cfg.train.lr or 'default'})[/bold]")
                results.append(
                    run_pipeline(cfg, output, ws, bars, echo, checkpoint_every=checkpoint_every, reuse_from=reuse_from)
                )
        return results
    from ..run.parallel import run_parallel

    prepare_output(output)
    # Generate each dataset once, before the workers start. They compute the vision features; with the
    # feature cache, the first worker to need a split computes it and the others read it from disk.
    for cfg in configs:
        for name, split in [(t, "train") for t in cfg.train_tasks] + [(cfg.task, cfg.data.eval_split)]:
            ws.data(TASKS.get(name), split, cfg.data)
    echo(f"running {len(configs)} jobs in {jobs} processes")

    def report(r):
        blind = f" (blind {100 * r['blind']['score']:.1f})" if "blind" in r else ""
        echo(
            f"{r['connector']} on {r['task']}: {100 * r['score']:.1f} ± {100 * r['stderr']:.1f}{blind}, "
            f"{r['wall_seconds']:.0f} s"
        )

    return run_parallel(configs, output, jobs, on_result=report, feature_cache=feature_cache, reuse_from=reuse_from)


def launch_jobs(
    configs: list, output: Path, launch_cfg, checkpoint_every: int, feature_cache: bool = True
) -> tuple[list[dict], list[str]]:
    """Hand each run to the local or submitit launcher: (results of the runs that finished, failures)."""
    from ..dist.env import env_layout
    from ..plugins import loaded_plugins
    from ..run.jobs import launch
    from ..run.outputs import prepare_output

    if env_layout()[1] > 1:
        raise AlignBenchError(
            f"--launcher {launch_cfg.launcher} starts its own processes; run the sweep itself as one "
            "process (not under torchrun or accelerate launch)"
        )
    if loaded_plugins():
        raise AlignBenchError(
            "a --plugin is imported in this process only; install the plug-in as a package (entry "
            f"point) to run it through --launcher {launch_cfg.launcher}"
        )
    for cfg in configs:  # fail before submitting anything if any job is invalid
        cfg.validate()
        cfg.train.layout(launch_cfg.world_size)
    prepare_output(output)
    outcomes = launch(configs, output, launch_cfg, checkpoint_every, log=echo, feature_cache=feature_cache)
    results = [o.result for o in outcomes if o.result is not None]
    failed = [f"{o.name}: {o.error} (log {o.log})" for o in outcomes if o.result is None]
    return results, failed


def resume_config(ctx: typer.Context, run_dir: Path):
    """(configuration, output directory) of the run to continue, from its own config.json."""
    from ..run.checkpoint_eval import read_run_config

    # Sources are compared by name: typer may bring its own copy of click's ParameterSource.
    given = [
        name
        for name in ctx.params
        if name not in ("resume", "checkpoint_every", "plugin", "feature_cache", "report_to")
        and getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    ]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise AlignBenchError(
            f"--resume continues a run with the configuration in its config.json; drop {flags} "
            "(or start a new run without --resume)"
        )
    cfg, _ = read_run_config(run_dir)
    return cfg, run_dir.parent.parent
