"""`alignbench run`: train one connector briefly and evaluate it on one task."""

from __future__ import annotations

import typer

from ..config.run import RunCommand
from . import common
from .options import generated


@generated(RunCommand)
def run(ctx: typer.Context, cmd: RunCommand) -> None:
    """Train one connector briefly and evaluate it on one task; append a leaderboard row."""
    from ..run.pipeline import run as run_pipeline
    from ..run.sweep import run_config

    common.quiet()
    common.load_plugins(cmd.session.plugins)
    if cmd.resume is not None:
        cfg, output = common.resume_config(ctx, cmd.resume)
        cfg.train.report_to = cmd.run.train.report_to  # where the curve streams may change; not the weights
    else:
        cfg, output = run_config(cmd.run), cmd.output
    cfg.validate()
    common.start_processes([cfg], cfg.device)
    with common.progress() as progress:
        result = run_pipeline(
            cfg,
            output,
            progress=progress,
            log=common.echo,
            checkpoint_every=cmd.session.checkpoint_every,
            resume=cmd.resume,
            feature_cache=cmd.session.feature_cache,
        )
    common.echo(common.result_table([result]))
    common.echo(f"leaderboard: {output / 'leaderboard.csv'}")
