"""Jobs started as processes: each job its own process (or torchrun of several) on this machine, at most `jobs` at
a time with their own GPUs, or each a submitit job (SLURM, or submitit's local executor). What a job runs is given
by the caller (`alignbench.run.jobs`): a module run as `python -m MODULE JOB.json`, or a function submitit calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config.launch import LaunchConfig
from ..errors import AlignBenchError


@dataclass
class JobOutcome:
    name: str
    result: dict | None
    error: str | None
    log: Path | None


def _device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_local(names: list[str], folder: Path, lc: LaunchConfig, cpu_only: bool, module: str,
                 log) -> list[JobOutcome]:
    """Run FOLDER/NAME.json as `python -m MODULE` (under torchrun for several processes per job), `lc.jobs` at a
    time; outcomes in the order of `names`."""
    gpus = 0 if cpu_only else _device_count()
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
                       f"--nproc-per-node={lc.nproc_per_job}", "-m", module, str(job_file)]
            else:
                cmd = [sys.executable, "-m", module, str(job_file)]
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


def launch_submitit(names: list[str], specs: list[dict], folder: Path, lc: LaunchConfig, cpu_only: bool, job,
                    log) -> list[JobOutcome]:
    """Submit `job(spec)` for every spec through submitit; outcomes in the order of `names`."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=lc.cluster)
    gpus = 0 if cpu_only else lc.nproc_per_job
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
        jobs.append(executor.submit(job, spec))
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


def _submitit_tasks() -> int:
    """Tasks of the submitit job this process belongs to (0 outside submitit)."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_LOCAL_JOB_ID" not in os.environ:
        return 0
    import submitit

    try:
        return submitit.JobEnvironment().num_tasks
    except RuntimeError:
        return 0


def export_submitit_env() -> None:
    """Inside a submitit job of several tasks: the process-group environment (RANK, WORLD_SIZE, ...) from SLURM's."""
    if _submitit_tasks() > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
