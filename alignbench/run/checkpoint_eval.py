"""A trained run, rebuilt from its directory alone: its configuration (`read_run_config`, the typed reading of
config.json), its model (`load_run`), and its re-evaluation on a task (`evaluate_checkpoint`, `alignbench eval`):
a new directory under OUTPUT/runs and a leaderboard row marked with the evaluator and the checkpoint's run id."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..config.run import EVALUATORS, CheckpointEvalConfig, RunConfig, read_saved_config
from ..dist.context import context
from ..errors import AlignBenchError
from ..evaluate import evaluate
from ..model.checkpoint import load_trained
from ..model.vlm import VLM
from ..plugins import loaded_plugins
from ..task import TASKS
from .leaderboard import append_leaderboard, leaderboard_row
from .outputs import git_commit, machine, new_run_dir, prepare_output, versions, write_run
from .resume import write_skipped
from .workspace import Workspace, resolve_device


def _quiet(*args, **kwargs) -> None:
    pass


def read_run_config(run_dir: Path) -> tuple[RunConfig, dict]:
    """The configuration a run directory was made with (config.json), typed and as saved."""
    path = Path(run_dir) / "config.json"
    saved = read_saved_config(run_dir)
    try:
        missing = [p for p in saved.get("plugins", []) if p not in loaded_plugins()]
        if missing:
            raise AlignBenchError(
                f"{run_dir} was made with plug-in(s) {', '.join(map(str, missing))}; pass --plugin for each"
            )
        cfg = RunConfig.from_dict(saved)
        cfg.validate()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AlignBenchError(f"{path} is not an AlignBench run config ({type(exc).__name__}: {exc})") from None
    except AlignBenchError as exc:
        if "plug-in" in str(exc):
            raise
        raise AlignBenchError(f"{path} holds a value no run accepts ({exc}); was it edited? Start a new run") from None
    return cfg, saved


def load_run(run_dir: Path, device: str = "auto", log=print) -> tuple[VLM, RunConfig, Workspace]:
    """Rebuild a trained model from its run directory alone: the backbone its config.json names (hub ids or
    local folders), the trained weights from its safetensors."""
    cfg, saved = read_run_config(run_dir)
    ws = Workspace(cfg.backbone, cfg.data, resolve_device(device), log)
    model, _ = load_trained(Path(run_dir), ws.backbone, ws.device)
    return model, cfg, ws


def evaluate_checkpoint(
    cfg: CheckpointEvalConfig, output: Path, progress=None, log=print, score: Callable | None = None
) -> dict:
    """Score a checkpoint on `cfg.task`: a new directory under OUTPUT/runs (config.json, predictions.jsonl,
    results.json) and a leaderboard row marked with the evaluator and the checkpoint's run id.

    `cfg.evaluator` "alignbench" scores with AlignBench's own evaluation; another evaluator is `score(model,
    backbone, task, split, cfg, log) -> (result, records)`, given by the caller (lmms-eval's:
    `alignbench.lmms.bridge.evaluate_with_lmms_eval`), which receives the evaluation rows without features."""
    if cfg.evaluator not in EVALUATORS:
        raise AlignBenchError(f"unknown evaluator {cfg.evaluator!r}; use {' or '.join(EVALUATORS)}")
    if (cfg.evaluator == "alignbench") != (score is None):
        raise AlignBenchError(
            f"evaluator {cfg.evaluator!r} is AlignBench's own evaluation only without a scoring "
            "function, and any other evaluator needs one"
        )
    task = TASKS.get(cfg.task)
    dist = context()
    if dist.enabled and cfg.evaluator != "alignbench":
        raise AlignBenchError(
            "--via lmms-eval runs in one process (lmms-eval has its own launcher: accelerate launch "
            "-m lmms_eval --model alignbench ...); start alignbench eval without torchrun"
        )
    if not dist.is_main:
        log, progress = _quiet, None
    t0 = time.time()
    dist.on_main(prepare_output, output)
    run_dir = Path(cfg.checkpoint)

    def load():
        model, run_cfg, ws = load_run(run_dir, cfg.device, log)
        # 1. the evaluation rows, from the configured source (the checkpoint's own by default); lmms-eval
        #    computes the vision features itself, from the images it is handed
        split, feats = (
            ws.split(task, "eval", cfg.data)
            if cfg.evaluator == "alignbench"
            else (ws.data(task, "eval", cfg.data), None)
        )
        return model, run_cfg, ws, split, feats

    model, run_cfg, ws, split, feats = dist.main_first(load)
    if split.skipped:
        log(
            f"{task.name}: skipped {len(split.skipped)} of {len(split.skipped) + len(split.samples)} questions "
            f"({', '.join(f'{n} {r}' for r, n in split.skip_counts().items())})"
        )
    # 2. score them
    if cfg.evaluator == "alignbench":
        result, records = evaluate(model, task, split, feats, cfg.eval, ws.device, progress)
    else:
        result, records = score(model, ws.backbone, task, split, cfg, log)
    # 3. write: its own directory, then the leaderboard row (the checkpoint's training settings, this task)
    row_config = json.loads(
        json.dumps(asdict(run_cfg) | {"task": task.name, "data": asdict(cfg.data), "train_tasks": run_cfg.train_tasks})
    )
    result |= {
        "task": task.name,
        "connector": run_cfg.connector,
        "backbone_key": ws.backbone.key,
        "evaluator": cfg.evaluator,
        "checkpoint": run_dir.name,
        "n_skipped": len(split.skipped),
        "skipped": split.skip_counts(),
        "wall_seconds": round(time.time() - t0, 2),
        "versions": versions(),
        "commit": git_commit(),
        "device": ws.device,
        "machine": machine(),
    }
    result["distributed"] = {"world_size": dist.world_size}
    config = json.loads(
        json.dumps(
            {
                "kind": "checkpoint-eval",
                **asdict(cfg),
                "checkpoint_config": row_config,
                "distributed": result["distributed"],
            }
        )
    )

    def write() -> Path:
        out_dir = new_run_dir(output, task.name, f"{run_cfg.connector}-{cfg.evaluator}", run_cfg.data.seed)
        write_skipped(out_dir, [{"split": f"{task.name}/{cfg.data.eval_split}", **row} for row in split.skipped])
        write_run(out_dir, config, result, records)
        append_leaderboard(output, leaderboard_row(out_dir, row_config, result))
        return out_dir

    result["run_dir"] = str(dist.on_main(write))
    return result
