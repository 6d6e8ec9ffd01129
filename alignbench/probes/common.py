"""The runs a probe examines: each configuration's trained weights, found by the training key of the runs under
`--output` or `--reuse-from` (`alignbench.run.reuse.trained_run`: the same definition of "the same trained run" every
sweep uses), or trained now when none has them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config.eval import EvalConfig
from ..config.run import RunConfig
from ..model.checkpoint import load_trained
from ..run.pipeline import run as run_pipeline
from ..run.reuse import trained_run
from ..run.workspace import Workspace
from ..task import TASKS, Task


@dataclass
class Trained:
    label: str  # connector name
    seed: int
    run_dir: Path
    trained_now: bool
    model: object  # VLM


def run_entry(t: Trained, **measures: dict) -> dict:
    """A probe's record of one trained run: which run it is, then the probe's own measures (each a dict to fill)."""
    entry = {"connector": t.label, "seed": t.seed, "run": t.run_dir.name, "trained_now": t.trained_now}
    return {**entry, "scores": {}, "per_sample": {}, **measures}


def trained_models(
    configs: list[RunConfig], output: Path, ws: Workspace, log=print, progress=None, reuse_from: Sequence[Path] = ()
) -> list[Trained]:
    """Load every config's trained model from its run directory (under `output`, else under `reuse_from`, in that
    order), training only what is missing (under `output`)."""
    out = []
    for cfg in configs:
        run_dir = trained_run([output, *reuse_from], cfg, ws.backbone.key, ws.device)
        trained_now = run_dir is None
        if trained_now:
            log(f"{cfg.connector} on {cfg.task} (seed {cfg.data.seed}): no trained run under {output}; training it")
            result = run_pipeline(cfg, output, ws, progress=progress, log=log)
            run_dir = Path(result["run_dir"])
        else:
            log(f"{cfg.connector} on {cfg.task} (seed {cfg.data.seed}): re-using {run_dir.name} (no training)")
        model, _ = load_trained(run_dir, ws.backbone, ws.device)
        out.append(Trained(cfg.connector, cfg.data.seed, run_dir, trained_now, model))
    return out


def scores_of(records: list[dict]) -> list[float]:
    return [r["score"] for r in records]


def probe_record(kind: str, task_name: str, scoring: EvalConfig | None, **fields) -> tuple[Task, EvalConfig, dict]:
    """A scoring probe's task, how it scores (the command's --eval-* options; a probe scores no blind baseline) and
    the head of its record: what it measured on which task, `fields`, how it scored, then its runs."""
    task = TASKS.get(task_name)
    scoring = dataclasses.replace(scoring or EvalConfig(), blind=False)
    head = {"kind": kind, "task": task_name, "metric": task.metric, **fields}
    head["eval"] = {"batch_size": scoring.batch_size, "dtype": scoring.dtype}
    return task, scoring, head | {"runs": []}
