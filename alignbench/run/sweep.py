"""What a sweep, a search or a probe runs, expanded from its options in the library: connector options per
connector, grids of option values, seeds (data seed s, init seed init_seed + s), and the best trial of an earlier
learning-rate search (`--tuned lr_search.csv`)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pandas as pd

from ..config.run import RunConfig
from ..errors import AlignBenchError


def key_values(pairs: list[str] | None, option: str, example: str) -> dict[str, str]:
    """Repeated `--OPTION KEY=VALUE` as a dict (text values); anything else is one message with an example."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise AlignBenchError(f"--{option} {p!r} is not KEY=VALUE (e.g. --{option} {example})")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def per_connector(pairs: list[str] | None, connectors: list[str], flag: str = "--connector-arg"
                  ) -> dict[str, dict[str, str]]:
    """`--connector-arg align.ln2_lr_mult=10` -> {"align": {"ln2_lr_mult": "10"}} (multi-connector commands)."""
    out: dict[str, dict[str, str]] = {c: {} for c in connectors}
    for key, value in key_values(pairs, "connector-arg", "num_latents=32").items():
        name, _, option = key.partition(".")
        if not option or name not in out:
            raise AlignBenchError(f"{flag} {key}={value}: use CONNECTOR.OPTION=VALUE with a connector of "
                                  f"this command ({', '.join(connectors)})")
        out[name][option] = value
    return out


def seeded(cfg: RunConfig, seed: int) -> RunConfig:
    """Seed s: data seed s (pages and batch order) and connector init seed `init_seed + s`."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=seed),
                               train=dataclasses.replace(cfg.train, init_seed=cfg.train.init_seed + seed))


def tuned_settings(tuned: Path | None, conn_list: list[str], lr: float | None,
                   args: dict[str, dict]) -> tuple[dict, dict]:
    """Per connector: the learning rate and options of its best trial in the search `tuned` (lr_search.csv), where
    --lr and --connector-arg do not say otherwise; without `tuned`, `lr` and `args` as they are."""
    best = read_search(tuned) if tuned is not None else {}
    missing = [c for c in conn_list if tuned is not None and c not in best]
    if missing:
        raise AlignBenchError(f"--tuned {tuned} has no trial of {', '.join(missing)}; search them with "
                              "`alignbench tune` or leave --tuned out")
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
    return search.sort_values(["val_score", "final_loss"], ascending=[False, True], kind="stable").groupby(
        "connector", sort=False).head(1)


def read_search(path: Path) -> dict[str, tuple[float, dict[str, str]]]:
    """{connector: (learning rate, connector options)} of the best trials in a search's lr_search.csv."""
    try:
        search = pd.read_csv(path, keep_default_na=False)
        best = best_trials(search)
        return {str(r.connector): (float(r.lr), dict(kv.split("=", 1) for kv in str(r.options).split() if "=" in kv))
                for r in best.itertuples()}
    except FileNotFoundError:
        raise AlignBenchError(f"--tuned {path}: no such file; give the lr_search.csv an `alignbench tune` wrote") \
            from None
    except (ValueError, KeyError, AttributeError, pd.errors.ParserError) as exc:
        raise AlignBenchError(f"--tuned {path} is not a search table written by `alignbench tune` "
                              f"({type(exc).__name__}: {exc}); give its lr_search.csv") from None
