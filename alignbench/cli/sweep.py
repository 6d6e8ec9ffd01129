"""`alignbench sweep`: every connector x task pair on the same backbone, data and seed, and the comparison table."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config.sweep import SweepCommand
from ..errors import AlignBenchError
from . import common
from .options import generated


@generated(SweepCommand)
def sweep(cmd: SweepCommand) -> None:
    """Train and evaluate every connector x task pair on the same backbone, data and seed; write the table."""
    import dataclasses

    from ..io import atomic_write
    from ..reporting.leaderboard import comparison_table, write_table
    from ..run.leaderboard import read_leaderboard
    from ..run.outputs import machine
    from ..run.sweep import sweep_configs
    from ..task import TASKS

    common.quiet()
    common.load_plugins(cmd.session.plugins)
    configs, connectors, tasks = sweep_configs(cmd)
    launch_cfg, session, output = cmd.launch, cmd.session, cmd.output
    launch_cfg.validate()
    t0 = time.time()
    failed: list[str] = []
    if launch_cfg.launcher == "inline":
        results = common.execute(
            configs,
            output,
            launch_cfg.jobs,
            cmd.run.device,
            session.checkpoint_every,
            session.feature_cache,
            session.reuse_from,
        )
    elif session.reuse_from:
        raise AlignBenchError(
            "--reuse-from works with --launcher inline (this process or --jobs workers); drop one of them"
        )
    else:
        results, failed = common.launch_jobs(
            configs, output, launch_cfg, session.checkpoint_every, session.feature_cache
        )
    if not common.is_main():
        return  # rank 0 writes the table
    if results:
        common.echo(common.result_table(results))
    else:
        raise AlignBenchError(f"every job failed: {'; '.join(failed)}")
    board = read_leaderboard(output / "leaderboard.csv")
    board = board[board.run_id.isin([Path(r["run_dir"]).name for r in results])]
    table = comparison_table(board, connectors, tasks)
    csv, md = write_table(output, table, tasks, {t: TASKS.get(t).metric for t in tasks})
    wall = time.time() - t0
    atomic_write(
        output / "sweep.json",
        json.dumps(
            {
                "command": "alignbench " + " ".join(sys.argv[1:]),
                "wall_seconds": round(wall, 1),
                "runs": [Path(r["run_dir"]).name for r in results],
                "launch": dataclasses.asdict(launch_cfg),
                "failed": failed,
                "machine": machine(),
            },
            indent=2,
        ),
    )
    common.echo(f"sweep of {len(results)} runs in {wall:.0f} s; table: {csv}, {md}")
    if failed:
        raise AlignBenchError(
            f"{len(failed)} of {len(configs)} jobs failed ({'; '.join(failed)}); the table and the "
            "leaderboard hold the runs that finished"
        )
