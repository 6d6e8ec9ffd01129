"""Sweep jobs handed to a scheduler: each (connector, task, seed) run is one job, and every job appends its row to
the same leaderboard (appends hold a file lock), so the sweep's table is built from the rows its jobs wrote.

Launchers (`alignbench sweep --launcher ...`):

* `inline` (default): this process runs the jobs one after the other, or `--jobs N` worker processes do;
* `local`: each job is its own process (`python -m alignbench.launch JOB.json`), or its own torchrun of
  `--nproc-per-job` processes, at most `--jobs` at a time; on GPUs each running job gets its own devices;
* `submitit`: each job is submitted through submitit: to SLURM (`--cluster slurm`, with `--nproc-per-job` tasks
  per node, one per GPU, and `--nodes-per-job` nodes), or to submitit's local executor (`--cluster local`).

A job is described by a JSON file (the run's configuration, as config.json dumps it), so it runs the same
wherever it lands. Job files, logs and each job's summary go to OUTPUT/launch/SWEEP_ID/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import AlignBenchError

LAUNCHERS = ("inline", "local", "submitit")
CLUSTERS = ("slurm", "local", "debug")


@dataclass
class LaunchConfig:
    launcher: str = "inline"
    jobs: int = 1  # inline: worker processes; local: jobs running at once (submitit: the scheduler decides)
    nproc_per_job: int = 1  # processes per job and node (one per GPU): torchrun (local) or tasks (submitit)
    nodes_per_job: int = 1  # submitit on SLURM only
    cluster: str = "slurm"  # submitit: slurm, local (its local executor) or debug (in this process)
    partition: str | None = None  # SLURM partition
    time_min: int = 240  # SLURM time limit per job, minutes
    slurm_args: dict[str, str] = field(default_factory=dict)  # more sbatch settings: account, qos, constraint, ...
    poll_seconds: float = 0.25  # local launcher: how often it checks its job processes (a cheap check)

    def validate(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise AlignBenchError(f"unknown --launcher {self.launcher!r}; use {', '.join(LAUNCHERS)}")
        if self.cluster not in CLUSTERS:
            raise AlignBenchError(f"unknown --cluster {self.cluster!r}; use {', '.join(CLUSTERS)}")
        for name in ("jobs", "nproc_per_job", "nodes_per_job", "time_min"):
            if getattr(self, name) < 1:
                raise AlignBenchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.launcher == "inline" and (self.nproc_per_job > 1 or self.nodes_per_job > 1):
            raise AlignBenchError("--nproc-per-job and --nodes-per-job need --launcher local or submitit (inline jobs "
                                  "run in this process; start the sweep itself with torchrun to spread them)")
        if self.nodes_per_job > 1 and not (self.launcher == "submitit" and self.cluster == "slurm"):
            raise AlignBenchError("--nodes-per-job above 1 needs --launcher submitit --cluster slurm")
        if self.launcher == "submitit":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise AlignBenchError("--launcher submitit needs submitit: pip install 'alignbench[distributed]'") \
                    from None

    @property
    def world_size(self) -> int:
        return self.nproc_per_job * self.nodes_per_job


# ---------------------------------------------------------------- one job


def job_spec(cfg, output: Path, checkpoint_every: int, result_file: Path | None = None,
             feature_cache: bool = True) -> dict:
    """A job as JSON: the run's configuration, where it writes, and whether it uses the feature cache."""
    return {"config": json.loads(json.dumps(asdict(cfg))), "output": str(Path(output).resolve()),
            "checkpoint_every": checkpoint_every, "result_file": str(result_file) if result_file else None,
            "feature_cache": feature_cache}


def summary(result: dict) -> dict:
    keys = ("connector", "task", "metric", "score", "stderr", "n", "blind", "wall_seconds", "train_seconds",
            "final_loss", "distributed", "run_dir")
    return {k: result[k] for k in keys if k in result}


def run_job(spec: dict) -> dict | None:
    """The body of one job, in each of its processes: join the job's process group (torchrun's environment, or
    SLURM's through submitit), run, and on rank 0 write and return the run's summary."""
    from . import distributed
    from .pipeline import RunConfig, quiet_libraries, run

    if _submitit_tasks() > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    cfg = RunConfig.from_dict(spec["config"])
    quiet_libraries()
    dist = distributed.init_from_env(cfg.device)
    try:
        result = summary(run(cfg, Path(spec["output"]), log=print if dist.is_main else _quiet,
                             checkpoint_every=spec["checkpoint_every"], feature_cache=spec.get("feature_cache", True)))
        if dist.is_main and spec.get("result_file"):
            from .results import atomic_write

            atomic_write(Path(spec["result_file"]), json.dumps(result, indent=2))
        return result if dist.is_main else None
    finally:
        distributed.shutdown()


def _quiet(*args, **kwargs) -> None:
    pass


def _submitit_tasks() -> int:
    """Tasks of the submitit job this process belongs to (0 outside submitit)."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_LOCAL_JOB_ID" not in os.environ:
        return 0
    import submitit

    try:
        return submitit.JobEnvironment().num_tasks
    except RuntimeError:
        return 0


def main(argv: list[str] | None = None) -> None:
    """`python -m alignbench.launch JOB.json` (what the local launcher starts, alone or under torchrun)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m alignbench.launch JOB.json\n")
        sys.exit(2)
    try:
        run_job(json.loads(Path(args[0]).read_text()))
    except AlignBenchError as exc:
        from .distributed import SharedError, env_layout

        if env_layout()[0] == 0 or not isinstance(exc, SharedError):
            sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


# ---------------------------------------------------------------- many jobs


@dataclass
class JobOutcome:
    name: str
    result: dict | None
    error: str | None
    log: Path | None


def launch(configs: list, output: Path, launch_cfg: LaunchConfig, checkpoint_every: int, log=print,
           feature_cache: bool = True) -> list[JobOutcome]:
    """Run every config as a job through the chosen scheduler; outcomes in input order (failed jobs carry their
    error and log, the others their summary)."""
    launch_cfg.validate()
    folder = Path(output) / "launch" / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    from .results import safe_name

    names = [safe_name(f"{i:03d}-{cfg.task}-{cfg.connector}-s{cfg.data.seed}", "job name")
             for i, cfg in enumerate(configs)]  # they become file names
    specs = [job_spec(cfg, output, checkpoint_every, folder / f"{name}.result.json", feature_cache)
             for cfg, name in zip(configs, names)]
    for name, spec in zip(names, specs):
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=1))
    log(f"{len(configs)} jobs through the {launch_cfg.launcher} launcher"
        f"{f' ({launch_cfg.cluster})' if launch_cfg.launcher == 'submitit' else ''}, "
        f"{launch_cfg.world_size} process(es) each; job files and logs: {folder}")
    if launch_cfg.launcher == "local":
        return _launch_local(names, folder, launch_cfg, configs, log)
    return _launch_submitit(names, specs, folder, launch_cfg, configs, log)


def _device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _launch_local(names: list[str], folder: Path, lc: LaunchConfig, configs: list, log) -> list[JobOutcome]:
    gpus = 0 if all(c.device == "cpu" for c in configs) else _device_count()
    if gpus and lc.jobs * lc.nproc_per_job > gpus:
        raise AlignBenchError(f"--jobs {lc.jobs} x --nproc-per-job {lc.nproc_per_job} needs "
                              f"{lc.jobs * lc.nproc_per_job} GPUs; {gpus} are visible")
    threads = max(1, (os.cpu_count() or 1) // (lc.jobs * lc.nproc_per_job))
    pending = list(range(len(names)))
    running: dict[int, tuple[subprocess.Popen, int, object]] = {}  # job -> (process, slot, log file)
    free_slots = list(range(lc.jobs))
    outcomes: dict[int, JobOutcome] = {}
    while pending or running:
        while pending and free_slots:
            job, slot = pending.pop(0), free_slots.pop(0)
            job_file = folder / f"{names[job]}.json"
            if lc.nproc_per_job > 1:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc-per-node={lc.nproc_per_job}", "-m", "alignbench.launch", str(job_file)]
            else:
                cmd = [sys.executable, "-m", "alignbench.launch", str(job_file)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(var, None)  # a job is its own process group
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(
                    str(g) for g in range(slot * lc.nproc_per_job, (slot + 1) * lc.nproc_per_job))
            logf = open(folder / f"{names[job]}.log", "w")
            running[job] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env), slot, logf)
            log(f"started {names[job]}")
        time.sleep(lc.poll_seconds if running else 0)
        for job, (proc, slot, logf) in list(running.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del running[job]
            free_slots.append(slot)
            outcomes[job] = _local_outcome(names[job], folder, proc.returncode)
            log(_describe(outcomes[job]))
    return [outcomes[i] for i in range(len(names))]


def _local_outcome(name: str, folder: Path, code: int) -> JobOutcome:
    log_path = folder / f"{name}.log"
    result_file = folder / f"{name}.result.json"
    if code == 0 and result_file.is_file():
        return JobOutcome(name, json.loads(result_file.read_text()), None, log_path)
    lines = [x for x in log_path.read_text(errors="replace").splitlines() if x.strip()] if log_path.is_file() else []
    errors = [x for x in lines if x.startswith("error:")]
    why = errors[-1] if errors else (lines[-1] if lines else "no output")
    return JobOutcome(name, None, f"exit code {code}: {why}", log_path)


def _launch_submitit(names: list[str], specs: list[dict], folder: Path, lc: LaunchConfig, configs: list,
                     log) -> list[JobOutcome]:
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=lc.cluster)
    gpus = 0 if all(c.device == "cpu" for c in configs) else lc.nproc_per_job
    params: dict = {"timeout_min": lc.time_min, "tasks_per_node": lc.nproc_per_job}
    if lc.cluster == "slurm":
        params |= {"nodes": lc.nodes_per_job, "gpus_per_node": gpus,
                   **({"slurm_partition": lc.partition} if lc.partition else {}),
                   **({"slurm_additional_parameters": dict(lc.slurm_args)} if lc.slurm_args else {})}
    elif lc.cluster == "local":
        params |= {"gpus_per_node": gpus}
    executor.update_parameters(**params)
    jobs = []
    for name, spec in zip(names, specs):
        executor.update_parameters(name=f"alignbench-{name}")
        jobs.append(executor.submit(run_job, spec))
        log(f"submitted {name}: job {jobs[-1].job_id}")
    outcomes = []
    for name, job in zip(names, jobs):
        try:
            result = job.results()[0]  # task 0 is rank 0, the one that returns the summary
            outcomes.append(JobOutcome(name, result, None, Path(job.paths.stdout)))
        except Exception as exc:  # submitit raises its own failure types with the job's traceback
            text = " ".join(str(exc).split())
            errors = [part for part in text.split("error: ")[1:]]
            why = ("error: " + errors[-1][:300]) if errors else text[-300:]
            outcomes.append(JobOutcome(name, None, why, Path(job.paths.stderr)))
        log(_describe(outcomes[-1]))
    return outcomes


def _describe(outcome: JobOutcome) -> str:
    if outcome.result is None:
        return f"{outcome.name} failed ({outcome.error}); log: {outcome.log}"
    r = outcome.result
    return f"{outcome.name}: {100 * r['score']:.1f} ± {100 * r['stderr']:.1f}, {r.get('wall_seconds', 0):.0f} s"


if __name__ == "__main__":
    main()
