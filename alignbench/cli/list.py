"""`alignbench list`: the registered connectors, tasks and backbones."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..config.session import Session
from . import common
from .options import generated


@generated(Session, only=("plugins",))
def list_cmd(session: Session) -> None:
    """Show the registered connectors and tasks."""
    import dataclasses

    from ..backbones.hf import PRESETS
    from ..backbones.smollm2 import describe
    from ..connector import CONNECTORS
    from ..task import TASKS

    common.load_plugins(session.plugins)
    table = Table("name", "class", "options (defaults)", "default lr", title="connectors")
    for name in CONNECTORS.names():
        cls = CONNECTORS.get(name)
        opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Config))
        table.add_row(name, f"{cls.__module__}.{cls.__qualname__}", opts or "–", f"{cls.default_lr:g}")
    for name, why in CONNECTORS.broken().items():
        table.add_row(name, "[red]broken[/red]", escape(why), "–")
    common.echo(table)
    table = Table(
        "name",
        "metric",
        "source (--data hf)",
        "split",
        "training set (--data hf)",
        "lmms-eval task",
        "max new tokens",
        "embedded set",
        title="tasks",
    )
    for name in TASKS.names():
        t = TASKS.get(name)
        table.add_row(
            name,
            t.metric,
            f"{t.hf_path}" + (f" ({t.hf_config})" if t.hf_config else ""),
            t.eval_split,
            t.train_source.describe() if t.train_source else "– (give --train-data)",
            t.lmms_eval_task or "–",
            str(t.max_new_tokens),
            t.description,
        )
    for name, why in TASKS.broken().items():
        table.add_row(name, "[red]broken[/red]", escape(why), "", "", "", "", "")
    common.echo(table)
    smol = describe()
    table = Table("name", "vision tower", "language model", "V", "D", "layers", "needs", title="backbones (--backbone)")
    table.add_row(
        "tiny",
        "embedded SigLIP-style tower (glyph pages)",
        "embedded Llama-style LM",
        "101",
        "128",
        "4",
        "nothing (shipped)",
    )
    table.add_row(
        "smollm2",
        "embedded SigLIP-style tower (token pages)",
        smol["llm"],
        f"{smol['vocab_size']:,}",
        str(smol["hidden_size"]),
        str(smol["layers"]),
        "installed" if smol["installed"] else smol["needs"],
    )
    table.add_row("hf", "--vision ID_OR_PATH", "--llm ID_OR_PATH", "", "", "", "the models (hub or folders)")
    for name, (vision, llm) in PRESETS.items():
        table.add_row(name, vision, llm, "", "", "", "the hub, or its cache")
    common.echo(table)
