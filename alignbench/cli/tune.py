"""`alignbench tune`: a learning-rate (and connector-option) search per connector on a held-out validation split."""

from __future__ import annotations

import sys

from rich.table import Table

from ..config.sweep import TuneCommand
from . import common
from .options import generated

COLUMNS = ("connector", "options", "lr", "val score", "± stderr", "final loss", "best")


@generated(TuneCommand)
def tune(cmd: TuneCommand) -> None:
    """Learning-rate (and connector-option) search per connector, scored on a held-out validation split (never
    the test split), with the same steps, batches and seeds for every trial."""
    import pandas as pd

    from ..config.run import option_text
    from ..io import atomic_write
    from ..reporting.tables import markdown_rows
    from ..run.sweep import best_trials, earlier_search, merge_search, tune_configs

    common.quiet()
    common.load_plugins(cmd.session.plugins)
    configs = tune_configs(cmd)
    earlier = earlier_search(cmd.output / "lr_search.csv")
    command = "alignbench " + " ".join(sys.argv[1:])
    results = common.execute(
        configs,
        cmd.output,
        cmd.jobs,
        cmd.run.device,
        feature_cache=cmd.session.feature_cache,
        reuse_from=cmd.session.reuse_from,
    )
    rows = [
        {
            "connector": cfg.connector,
            "options": " ".join(f"{k}={option_text(v)}" for k, v in cfg.connector_args.items()),
            "lr": cfg.train.lr,
            "val_score": r["score"],
            "val_stderr": r["stderr"],
            "n": r["n"],
            "final_loss": r["final_loss"],
            "command": command,
        }
        for cfg, r in zip(configs, results)
    ]
    if not common.is_main():
        return  # rank 0 writes the search's table
    df = merge_search(earlier, pd.DataFrame(rows))
    best = best_trials(df)
    first = configs[0]
    title = (
        f"search on the {first.task} validation split ({first.data.eval_questions} questions): "
        f"{first.train.steps} steps of {first.train.batch_size} pages, training tasks "
        f"{'+'.join(first.train_tasks)}, stage {first.train.stage}, data seed {first.data.seed}, init seed "
        f"{first.train.init_seed}"
    )
    table = Table(*COLUMNS, title=title)
    cells = []
    for i, r in df.iterrows():
        cells.append(
            [
                r.connector,
                r.options or "–",
                f"{r.lr:g}",
                f"{100 * r.val_score:.1f}",
                f"{100 * r.val_stderr:.1f}",
                f"{r.final_loss:.3f}",
                "yes" if i in best.index else "",
            ]
        )
        table.add_row(*cells[-1])
    commands = [c for c in dict.fromkeys(df["command"]) if isinstance(c, str) and c]
    md = [f"# {title[0].upper()}{title[1:]}", "", *[f"- `{c}`" for c in commands]]
    if len(commands) > 1 or len(df) > len(rows):
        md.append("- rows of connectors the last command did not search come from the earlier search in this folder")
    md += ["", markdown_rows(list(COLUMNS), cells)]
    common.echo(table)
    output = cmd.output
    atomic_write(output / "lr_search.csv", df.to_csv(index=False))
    atomic_write(output / "lr_search.md", "\n".join(md) + "\n")
    common.echo(f"written: {output / 'lr_search.csv'}, {output / 'lr_search.md'}")
