"""`alignbench report`: the comparison report (95% CIs, paired tests, variance components, probes), or a power plan."""

from __future__ import annotations

import sys

from rich.table import Table

from ..config.report import ReportCommand
from . import common
from .options import generated


@generated(ReportCommand)
def report(cmd: ReportCommand) -> None:
    """Write the comparison report: 95% CIs, paired tests, variance components, probes, paper numbers."""
    from ..reporting.report import write_report
    from ..reporting.sections import PLAN_COLUMNS, plan_table
    from ..run.sweep import connector_names

    runs, plan = cmd.runs, cmd.plan
    connectors, tasks = connector_names(cmd.selection.connectors), list(cmd.selection.tasks)
    if plan is not None:
        rows, notes = plan_table(runs, connectors, tasks, plan)
        table = Table(
            *[c.replace("Δ", f"{plan:g} points") for c in PLAN_COLUMNS],
            title=f"Power plan for a difference of {plan:g} points (from the runs under {runs})",
        )
        for row in rows:
            table.add_row(*row)
        common.echo(table, *(n.replace("Δ", f"{plan:g} points") for n in notes), sep="\n")
        return
    path = write_report(
        runs, cmd.out or runs / "REPORT.md", connectors, tasks, command="alignbench " + " ".join(sys.argv[1:])
    )
    common.echo(f"report written: {path}")
