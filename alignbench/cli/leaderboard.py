"""`alignbench leaderboard`: the rows of an output directory (best first within each task), and mean ± std across
seeds; `--repair` rebuilds the file from the run directories."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from ..config.report import LeaderboardCommand
from ..errors import AlignBenchError
from . import common
from .options import generated

COLUMNS = (
    "task",
    "connector",
    "options",
    "train tasks",
    "metric",
    "score",
    "± stderr",
    "n",
    "blind",
    "stage",
    "steps",
    "seed",
    "evaluator",
    "run_id",
)


def _text(r, name: str, default: str = "–") -> str:
    value = r.get(name)
    missing = value is None or value == "" or (isinstance(value, float) and math.isnan(value))
    return default if missing else str(value)


@generated(LeaderboardCommand)
def leaderboard(cmd: LeaderboardCommand) -> None:
    """Print the leaderboard (one row per run, best first within each task), and mean ± std across seeds."""
    from ..io import atomic_write
    from ..reporting.leaderboard import aggregate_seeds
    from ..reporting.tables import markdown_rows
    from ..run.leaderboard import read_leaderboard, repair_leaderboard, training_runs

    output = cmd.output
    if cmd.repair:
        if not output.is_dir():
            raise AlignBenchError(f"--output {str(output)!r} is not a directory; give the folder holding runs/")
        backup, n, skipped = repair_leaderboard(output)
        if backup is not None:
            common.echo(f"the old leaderboard is kept as {backup}")
        for line in skipped:
            common.echo(f"[yellow]skipped[/yellow] {escape(line)}")
        if not n:
            raise AlignBenchError(
                f"no finished run directory under {output / 'runs'}: there is nothing to rebuild the leaderboard from"
            )
        common.echo(f"rebuilt {output / 'leaderboard.csv'} from {n} run director{'y' if n == 1 else 'ies'}")
    df = read_leaderboard(output / "leaderboard.csv")
    if cmd.task:
        df = df[df.task == cmd.task]
    df = df.sort_values(["task", "score"], ascending=[True, False])
    rows = []
    for _, r in df.iterrows():
        blind = "–" if r.isna().get("blind_score", True) else f"{100 * r.blind_score:.1f}"
        stderr = "–" if r.isna().get("stderr", True) else f"{100 * r.stderr:.1f}"
        evaluator = r.evaluator + (f" ({r.checkpoint})" if isinstance(r.get("checkpoint"), str) else "")
        rows.append(
            [
                r.task,
                r.connector,
                _text(r, "options"),
                _text(r, "train_tasks", r.task),
                r.metric,
                f"{100 * r.score:.1f}",
                stderr,
                str(r.n),
                blind,
                str(r.stage),
                str(r.steps),
                str(r.seed),
                evaluator,
                str(r.run_id),
            ]
        )
    table = Table(*COLUMNS, title=f"leaderboard ({output / 'leaderboard.csv'})")
    for row in rows:
        table.add_row(*row)
    common.echo(table)
    if cmd.markdown is not None:
        atomic_write(cmd.markdown, markdown_rows(COLUMNS, rows) + "\n")
        common.echo(f"written: {cmd.markdown}")
    agg = aggregate_seeds(training_runs(df))
    if (agg.seeds > 1).any():
        table = Table(
            "task",
            "connector",
            "stage",
            "steps",
            "lr",
            "mean",
            "± std",
            "seeds",
            "blind",
            title="across seeds (latest run per seed)",
        )
        for _, r in agg.iterrows():
            std = "–" if r.isna()["std"] else f"{100 * r['std']:.1f}"
            blind = "–" if r.isna()["blind"] else f"{100 * r.blind:.1f}"
            table.add_row(
                r.task,
                r.connector,
                str(r.stage),
                str(r.steps),
                f"{r.lr:g}",
                f"{100 * r['mean']:.1f}",
                std,
                str(r.seeds),
                blind,
            )
        common.echo(table)
