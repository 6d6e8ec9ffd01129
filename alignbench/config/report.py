"""What the reading commands show: `alignbench leaderboard` (the rows of an output directory) and `alignbench report`
(the comparison report, or a power plan)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import group, opt
from .session import DEFAULT_OUTPUT
from .sweep import Selection


@dataclass
class LeaderboardCommand:
    output: Path = opt(DEFAULT_OUTPUT, "Directory holding leaderboard.csv.")
    task: str | None = opt(None, "Only this task.")
    markdown: Path | None = opt(None, "Also write the table as Markdown to this file.")
    repair: bool = opt(
        False,
        "Rebuild leaderboard.csv from the finished run directories (config.json and "
        "results.json), keeping the old file as a backup.",
    )


@dataclass
class ReportCommand:
    runs: Path = opt(DEFAULT_OUTPUT, "Output directory of the sweep(s) and probes to report on.")
    out: Path | None = opt(None, "Markdown file to write (default: RUNS/REPORT.md).")
    selection: Selection = group(Selection, only=("connectors", "tasks"))
    plan: float | None = opt(
        None,
        "Only print the power plan for a difference of PLAN points (e.g. 2): variance "
        "components, the smallest detectable difference, the seeds or questions needed; writes "
        "no report.",
    )
