"""`alignbench eval`: re-evaluate a trained run (a checkpoint), by AlignBench's evaluation or lmms-eval's."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from ..config.run import EvalCommand
from ..config.session import DEFAULT_OUTPUT
from ..errors import AlignBenchError
from . import common
from .options import generated


@generated(EvalCommand)
def eval_cmd(cmd: EvalCommand) -> None:
    """Re-evaluate a trained run (a checkpoint) on a task and append a leaderboard row marked with the evaluator."""
    import dataclasses

    from ..config.run import EVALUATORS, CheckpointEvalConfig
    from ..dist.env import env_layout
    from ..run.checkpoint_eval import evaluate_checkpoint, read_run_config
    from ..task import TASKS

    common.quiet()
    common.load_plugins(cmd.session.plugins)
    checkpoint, via = cmd.checkpoint, cmd.via
    if via not in EVALUATORS:
        raise AlignBenchError(f"unknown --via {via!r}; use {' or '.join(EVALUATORS)}")
    if cmd.limit is not None and cmd.limit < 1:
        raise AlignBenchError(f"--limit must be at least 1, got {cmd.limit}")
    cmd.eval.validate()
    run_cfg, _ = read_run_config(checkpoint)
    data_cfg = dataclasses.replace(
        run_cfg.data,
        eval_split="eval",
        eval_limit=cmd.limit if cmd.limit else None,
        **({"source": cmd.data} if cmd.data else {}),
    )
    output = cmd.output
    if output is None:
        output = checkpoint.resolve().parent.parent if checkpoint.resolve().parent.name == "runs" else DEFAULT_OUTPUT
    cfg = CheckpointEvalConfig(
        checkpoint=str(checkpoint),
        task=cmd.task or run_cfg.task,
        evaluator=via,
        data=data_cfg,
        eval=dataclasses.replace(cmd.eval, blind=cmd.eval.blind and via == "alignbench"),
        device=cmd.device,
        lmms_task=cmd.lmms_task,
        include_path=cmd.include_path,
    )
    TASKS.get(cfg.task)
    if via == "lmms-eval" and env_layout()[1] > 1:
        raise AlignBenchError(
            "--via lmms-eval runs in one process (lmms-eval has its own launcher: accelerate launch "
            "-m lmms_eval --model alignbench ...); start alignbench eval without torchrun"
        )
    common.start_processes([], cmd.device)
    with common.progress() as progress:
        score = None
        if via == "lmms-eval":
            from ..lmms.bridge import evaluate_with_lmms_eval as score
        result = evaluate_checkpoint(cfg, output, progress=progress, log=common.echo, score=score)
    table = Table(
        "metric",
        "score",
        "± stderr",
        "n",
        "blind",
        "run",
        title=f"{checkpoint.name} on {result['task']}, scored by {via}",
    )
    blind_score = result.get("blind", {}).get("score")
    table.add_row(
        result["metric"],
        f"{100 * result['score']:.2f}",
        f"{100 * result['stderr']:.2f}",
        str(result["n"]),
        "–" if blind_score is None else f"{100 * blind_score:.1f}",
        Path(result["run_dir"]).name,
    )
    common.echo(table)
    if "alignbench_metric_on_these_predictions" in result:
        same = result["alignbench_metric_on_these_predictions"]
        common.echo(f"{same['metric']} (alignbench's definition) on the same predictions: {100 * same['score']:.2f}")
    common.echo(f"leaderboard: {output / 'leaderboard.csv'}")
