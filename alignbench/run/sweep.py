"""What a run, a sweep, a search or a probe runs, expanded from its command's configuration in the library: a run's
configuration completed (`run_config`: the backbone's recipe, typed connector options), connector options per
connector, grids of option values, seeds (data seed s, init seed init_seed + s), and the best trial of an earlier
learning-rate search (`--tuned lr_search.csv`)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pandas as pd

from ..config.base import comma_list, key_values
from ..config.probe import ProbeCommand
from ..config.run import RunConfig
from ..config.sweep import SweepCommand, TuneCommand
from ..errors import AlignBenchError
from ..train.recipes import apply_recipe, recipe_train_tasks

__all__ = [
    "key_values",
    "per_connector",
    "seeded",
    "tuned_settings",
    "grid_options",
    "best_trials",
    "read_search",
    "connector_names",
    "run_config",
    "sweep_configs",
    "tune_configs",
    "probe_configs",
]


def connector_names(names: list[str]) -> list[str]:
    """`--connectors`: the names given, or 'all': every built-in connector, in table order."""
    if names == ["all"]:
        from ..connector import CONNECTORS

        return CONNECTORS.builtins()
    return list(names)


def run_config(cfg: RunConfig) -> RunConfig:
    """A run's configuration as a command states it, completed: sizes checked, `--vision`/`--llm` alone mean a
    Hugging Face pair, the backbone's recipe where the command left it out, the connector's options typed (parsed
    once, here, where they enter)."""
    from ..connector import CONNECTORS, connector_options

    for name, value in (
        ("limit", cfg.data.eval_limit),
        ("train-docs", cfg.data.train_docs),
        ("eval-questions", cfg.data.eval_questions),
        ("train-limit", cfg.data.train_limit),
    ):
        if value is not None and value < 1:
            raise AlignBenchError(f"--{name} must be at least 1, got {value}")
    cfg.eval.validate()
    if cfg.backbone.name == "tiny" and (cfg.backbone.vision or cfg.backbone.llm):
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, name="hf"))
    cfg = apply_recipe(cfg)
    return dataclasses.replace(cfg, connector_args=connector_options(CONNECTORS.get(cfg.connector), cfg.connector_args))


def _pairs(
    template: RunConfig, connectors: list[str], tasks: list[str], lrs: dict[str, float | None], args: dict[str, dict]
) -> list[RunConfig]:
    """One completed configuration per task and connector (tasks outer), each with its learning rate and options."""
    return [
        run_config(
            dataclasses.replace(
                template,
                connector=c,
                task=t,
                connector_args=dict(args[c]),
                train=dataclasses.replace(template.train, lr=lrs[c]),
            )
        )
        for t in tasks
        for c in connectors
    ]


def sweep_configs(cmd: SweepCommand) -> tuple[list[RunConfig], list[str], list[str]]:
    """(configurations, connectors, tasks) of a sweep: every connector x task pair, trained once per connector on
    the sweep's tasks mixed (with what the backbone's recipe adds) unless --train-tasks says otherwise, repeated
    per seed."""
    sel, template = cmd.selection, cmd.run
    connectors, tasks = connector_names(sel.connectors), list(sel.tasks)
    args = per_connector(sel.connector_args, connectors)
    mixture = None if cmd.train_tasks == ["each"] else (cmd.train_tasks or tasks)
    if cmd.train_tasks is None and template.data.source == "embedded" and template.data.train_source is None:
        mixture = recipe_train_tasks(template.backbone.name, mixture)  # the default mixture and the recipe's tasks
    lrs, args = tuned_settings(sel.tuned, connectors, template.train.lr, args)
    template = dataclasses.replace(template, data=dataclasses.replace(template.data, train_tasks=mixture))
    configs = _pairs(template, connectors, tasks, lrs, args)
    if cmd.seeds is not None:
        configs = [
            seeded(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=0)), s)
            for s in cmd.seeds
            for cfg in configs
        ]
    return configs, connectors, tasks


def tune_configs(cmd: TuneCommand) -> list[RunConfig]:
    """The trials of a search: per connector, each combination of its `--grid` values with each learning rate, on
    the task's validation split (training on the task alone unless --train-tasks says otherwise)."""
    template, connectors = cmd.run, connector_names(cmd.selection.connectors)
    args = per_connector(cmd.selection.connector_args, connectors)
    grids = per_connector(cmd.grid, connectors, "--grid")  # {connector: {option: "v1,v2"}}
    template = dataclasses.replace(
        template,
        eval=dataclasses.replace(template.eval, blind=False),
        data=dataclasses.replace(template.data, train_tasks=template.data.train_tasks or [template.task]),
    )
    configs = []
    for c in connectors:
        for options in grid_options({n: comma_list(v, f"grid {c}.{n}") for n, v in grids[c].items()}):
            for lr in cmd.lrs:
                cfg = _pairs(template, [c], [template.task], {c: lr}, {c: args[c] | options})[0]
                configs.append(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_split="val")))
    return configs


def probe_configs(cmd: ProbeCommand) -> list[RunConfig]:
    """The runs a probe examines: every connector at every seed (with its tuned settings under --tuned)."""
    connectors = connector_names(cmd.selection.connectors)
    lrs, args = tuned_settings(
        cmd.selection.tuned, connectors, cmd.run.train.lr, per_connector(cmd.selection.connector_args, connectors)
    )
    return [seeded(cfg, s) for s in cmd.seeds for cfg in _pairs(cmd.run, connectors, [cmd.run.task], lrs, args)]


def per_connector(
    pairs: list[str] | None, connectors: list[str], flag: str = "--connector-arg"
) -> dict[str, dict[str, str]]:
    """`--connector-arg align.ln2_lr_mult=10` -> {"align": {"ln2_lr_mult": "10"}} (multi-connector commands)."""
    out: dict[str, dict[str, str]] = {c: {} for c in connectors}
    for key, value in key_values(pairs, "connector-arg", "num_latents=32").items():
        name, _, option = key.partition(".")
        if not option or name not in out:
            raise AlignBenchError(
                f"{flag} {key}={value}: use CONNECTOR.OPTION=VALUE with a connector of "
                f"this command ({', '.join(connectors)})"
            )
        out[name][option] = value
    return out


def seeded(cfg: RunConfig, seed: int) -> RunConfig:
    """Seed s: data seed s (pages and batch order) and connector init seed `init_seed + s`."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, seed=seed),
        train=dataclasses.replace(cfg.train, init_seed=cfg.train.init_seed + seed),
    )


def tuned_settings(
    tuned: Path | None, conn_list: list[str], lr: float | None, args: dict[str, dict]
) -> tuple[dict, dict]:
    """Per connector: the learning rate and options of its best trial in the search `tuned` (lr_search.csv), where
    --lr and --connector-arg do not say otherwise; without `tuned`, `lr` and `args` as they are."""
    best = read_search(tuned) if tuned is not None else {}
    missing = [c for c in conn_list if tuned is not None and c not in best]
    if missing:
        raise AlignBenchError(
            f"--tuned {tuned} has no trial of {', '.join(missing)}; search them with "
            "`alignbench tune` or leave --tuned out"
        )
    lrs = {c: lr if lr is not None or c not in best else best[c][0] for c in conn_list}
    return lrs, {c: (best[c][1] if c in best else {}) | args[c] for c in conn_list}


def grid_options(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of a connector's option values (`--grid CONNECTOR.OPTION=V1,V2,...`), in order; one empty
    combination without a grid."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def best_trials(search: pd.DataFrame) -> pd.DataFrame:
    """The best trial per connector of a learning-rate search (`alignbench tune`'s lr_search.csv): the highest
    validation score; among equal scores (a brief search can leave several at 0), the lowest final training loss
    (every trial of a connector trains on the same batches)."""
    return (
        search.sort_values(["val_score", "final_loss"], ascending=[False, True], kind="stable")
        .groupby("connector", sort=False)
        .head(1)
    )


def read_search(path: Path) -> dict[str, tuple[float, dict[str, str]]]:
    """{connector: (learning rate, connector options)} of the best trials in a search's lr_search.csv."""
    try:
        search = pd.read_csv(path, keep_default_na=False)
        best = best_trials(search)
        return {
            str(r.connector): (float(r.lr), dict(kv.split("=", 1) for kv in str(r.options).split() if "=" in kv))
            for r in best.itertuples()
        }
    except FileNotFoundError:
        raise AlignBenchError(
            f"--tuned {path}: no such file; give the lr_search.csv an `alignbench tune` wrote"
        ) from None
    except (ValueError, KeyError, AttributeError, pd.errors.ParserError) as exc:
        raise AlignBenchError(
            f"--tuned {path} is not a search table written by `alignbench tune` "
            f"({type(exc).__name__}: {exc}); give its lr_search.csv"
        ) from None


SEARCH_COLUMNS = ("connector", "options", "lr", "val_score", "final_loss")


def earlier_search(path: Path) -> pd.DataFrame | None:
    """The search table already at `path`, whose rows a new search into the same folder keeps for the connectors it
    does not search (a search of some connectors never drops another's trials); None when there is none. Read
    before the trials run, so a table that cannot be kept stops the search before any training."""
    if not path.is_file():
        return None
    hint = "move it away or give the search another --output"
    try:
        search = pd.read_csv(path, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise AlignBenchError(f"{path} is not a search table ({type(exc).__name__}: {exc}); {hint}") from None
    missing = [c for c in SEARCH_COLUMNS if c not in search.columns]
    if missing:
        raise AlignBenchError(f"{path} is not a search table (no column {', '.join(missing)}); {hint}")
    return search


def merge_search(earlier: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """The new search's rows, after the earlier table's rows of the connectors the new search did not search."""
    if earlier is None:
        return new
    kept = earlier[~earlier.connector.astype(str).isin(new.connector.astype(str))]
    return pd.concat([kept, new], ignore_index=True)
