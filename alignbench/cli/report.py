"""`alignbench report`: the comparison report (95% CIs, paired tests, variance components, probes), or a power plan."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

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

    @functools.cache
    def backbones() -> dict[str, str | None]:  # read once, and only if a probe without a recorded setup needs it
        return run_backbones(runs)

    path = write_report(
        runs,
        cmd.out or runs / "REPORT.md",
        connectors,
        tasks,
        command="alignbench " + " ".join(sys.argv[1:]),
        probe_setup_of=lambda probe: recorded_setup(probe, backbones()),
    )
    common.echo(f"report written: {path}")


def run_backbones(runs: Path) -> dict[str, str | None]:
    """The backbone key of every run directory under `runs` (any depth), by run name; None where unreadable."""
    import json

    found: dict[str, str | None] = {}
    for path in runs.rglob("config.json"):
        if path.parent.parent.name == "runs":
            try:
                found[path.parent.name] = json.loads(path.read_text()).get("backbone_key")
            except (OSError, ValueError):
                found[path.parent.name] = None
    return found


def recorded_setup(probe: dict, backbones: dict[str, str | None]) -> dict | None:
    """The setup of a probe written before probes recorded theirs: the data settings its recorded command line builds
    and the backbone key its runs agree on (`backbones`: `run_backbones`); None where either is unknown."""
    import shlex

    import typer

    from ..errors import AlignBenchError
    from ..probes.collect import probe_setup
    from ..run.sweep import probe_configs
    from .options import parse
    from .probe import probe_app

    argv = shlex.split(probe.get("command", ""))
    if argv[:2] != ["alignbench", "probe"] or len(argv) < 3:
        return None
    try:
        configs = probe_configs(parse(probe_app, argv[2:]))
    except (typer.TyperException, AlignBenchError, KeyError, ValueError):  # options that no longer exist
        return None
    keys = {backbones.get(r.get("run")) for r in probe.get("runs", [])}
    if len(keys) != 1 or None in keys or not configs:  # a run not found or unreadable: its backbone is unknown
        return None
    return probe_setup(keys.pop(), configs[0].data)
