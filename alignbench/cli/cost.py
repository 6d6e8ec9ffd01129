"""`alignbench cost`: what each connector costs on one backbone."""

from __future__ import annotations

import dataclasses

from ..config.cost import CostCommand
from . import common
from .options import generated


@generated(CostCommand)
def cost(cmd: CostCommand) -> None:
    """Measure what each connector costs on one backbone: parameters, tokens, FLOPs, time, memory."""
    from ..reporting.cost import measure_costs
    from ..reporting.tables import markdown_table
    from ..run.sweep import connector_names, per_connector

    common.quiet()
    common.load_plugins(cmd.session.plugins)
    connectors = connector_names(cmd.selection.connectors)
    cfg = dataclasses.replace(
        cmd.cost, connectors=connectors, connector_args=per_connector(cmd.selection.connector_args, connectors)
    )
    table = measure_costs(cfg, cmd.output, log=common.echo)
    common.echo(markdown_table(table))
    common.echo(f"cost table: {cmd.output / 'cost.md'}")
