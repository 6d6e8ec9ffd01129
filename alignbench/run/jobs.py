"""Sweep jobs handed to a scheduler: each (connector, task, seed) run is one job, and every job appends its row to
the same leaderboard (appends hold a file lock), so the sweep's table is built from the rows its jobs wrote.

Launchers (`alignbench sweep --launcher ...`, `alignbench.config.launch.LaunchConfig`):

* `inline` (default): this process runs the jobs one after the other, or `--jobs N` worker processes do
  (`alignbench.run.parallel`);
* `local`: each job is its own process (`python -m alignbench.run.jobs JOB.json`), or its own torchrun of
  `--nproc-per-job` processes, at most `--jobs` at a time; on GPUs each running job gets its own devices;
* `submitit`: each job is submitted through submitit: to SLURM (`--cluster slurm`, with `--nproc-per-job` tasks
  per node, one per GPU, and `--nodes-per-job` nodes), or to submitit's local executor (`--cluster local`).

A job is described by a JSON file (the run's configuration, as config.json dumps it), so it runs the same
wherever it lands. Job files, logs and each job's summary go to OUTPUT/launch/SWEEP_ID/ (`alignbench.dist.launch`
starts them).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..config.launch import LaunchConfig
from ..config.run import RunConfig
from ..dist import context as distributed
from ..dist.launch import JobOutcome, export_submitit_env, launch_local, launch_submitit
from ..errors import AlignBenchError
from ..io import atomic_write
from .outputs import safe_name
from .pipeline import run
from .workspace import quiet_libraries

MODULE = "alignbench.run.jobs"  # what a local job runs: python -m alignbench.run.jobs JOB.json


def job_spec(
    cfg, output: Path, checkpoint_every: int, result_file: Path | None = None, feature_cache: bool = True
) -> dict:
    """A job as JSON: the run's configuration, where it writes, and whether it uses the feature cache."""
    return {
        "config": json.loads(json.dumps(asdict(cfg))),
        "output": str(Path(output).resolve()),
        "checkpoint_every": checkpoint_every,
        "result_file": str(result_file) if result_file else None,
        "feature_cache": feature_cache,
    }


def summary(result: dict) -> dict:
    keys = (
        "connector",
        "task",
        "metric",
        "score",
        "stderr",
        "n",
        "blind",
        "wall_seconds",
        "train_seconds",
        "final_loss",
        "distributed",
        "run_dir",
    )
    return {k: result[k] for k in keys if k in result}


def run_job(spec: dict) -> dict | None:
    """The body of one job, in each of its processes: join the job's process group (torchrun's environment, or
    SLURM's through submitit), run, and on rank 0 write and return the run's summary."""
    export_submitit_env()
    cfg = RunConfig.from_dict(spec["config"])
    quiet_libraries()
    dist = distributed.init_from_env(cfg.device)
    try:
        result = summary(
            run(
                cfg,
                Path(spec["output"]),
                log=print if dist.is_main else _quiet,
                checkpoint_every=spec["checkpoint_every"],
                feature_cache=spec.get("feature_cache", True),
            )
        )
        if dist.is_main and spec.get("result_file"):
            atomic_write(Path(spec["result_file"]), json.dumps(result, indent=2))
        return result if dist.is_main else None
    finally:
        distributed.shutdown()


def _quiet(*args, **kwargs) -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    """`python -m alignbench.run.jobs JOB.json` (what the local launcher starts, alone or under torchrun)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m alignbench.run.jobs JOB.json\n")
        sys.exit(2)
    try:
        run_job(json.loads(Path(args[0]).read_text()))
    except AlignBenchError as exc:
        if distributed.env_layout()[0] == 0 or not isinstance(exc, distributed.SharedError):
            sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


def launch(
    configs: list[RunConfig],
    output: Path,
    launch_cfg: LaunchConfig,
    checkpoint_every: int,
    log=print,
    feature_cache: bool = True,
) -> list[JobOutcome]:
    """Run every config as a job through the chosen scheduler; outcomes in input order (failed jobs carry their
    error and log, the others their summary)."""
    launch_cfg.validate()
    folder = Path(output) / "launch" / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [
        safe_name(f"{i:03d}-{cfg.task}-{cfg.connector}-s{cfg.data.seed}", "job name") for i, cfg in enumerate(configs)
    ]  # they become file names
    specs = [
        job_spec(cfg, output, checkpoint_every, folder / f"{name}.result.json", feature_cache)
        for cfg, name in zip(configs, names)
    ]
    for name, spec in zip(names, specs):
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=1))
    log(
        f"{len(configs)} jobs through the {launch_cfg.launcher} launcher"
        f"{f' ({launch_cfg.cluster})' if launch_cfg.launcher == 'submitit' else ''}, "
        f"{launch_cfg.world_size} process(es) each; job files and logs: {folder}"
    )
    cpu_only = all(c.device == "cpu" for c in configs)
    if launch_cfg.launcher == "local":
        return launch_local(names, folder, launch_cfg, cpu_only, MODULE, log)
    return launch_submitit(names, specs, folder, launch_cfg, cpu_only, run_job, log)


if __name__ == "__main__":
    main()
