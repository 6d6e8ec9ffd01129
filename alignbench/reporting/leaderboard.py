"""Comparisons read off the leaderboard: mean ± std across seeds, and the connectors x tasks table a sweep writes
(OUTPUT/table.csv, OUTPUT/table.md, the paper's Table 2 layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..io import atomic_write
from .tables import markdown_rows


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of the score across seeds for each (task, connector, training setting); the latest row per
    seed counts."""
    keys = [k for k in ("task", "connector", "backbone", "stage", "steps", "lr", "evaluator") if k in df]
    latest = df.drop_duplicates([*keys, "seed"], keep="last")
    agg = (
        latest.groupby(keys, dropna=False, sort=False)
        .agg(mean=("score", "mean"), std=("score", "std"), seeds=("seed", "nunique"), blind=("blind_score", "mean"))
        .reset_index()
    )
    return agg.sort_values(["task", "mean"], ascending=[True, False])


def comparison_table(df: pd.DataFrame, connectors: list[str], tasks: list[str]) -> pd.DataFrame:
    """Connectors x tasks (paper Table 2 layout): score, stderr and blind score per cell, plus the average.

    Where a pair has several rows (seeds), the latest row per (connector, task, seed) is kept and the
    mean over seeds is reported, with the standard deviation across seeds (`{task}_seed_std`)."""
    rows = []
    latest = df.drop_duplicates(["connector", "task", "seed"], keep="last")
    for c in connectors:
        row: dict = {"connector": c}
        for t in tasks:
            sel = latest[(latest.connector == c) & (latest.task == t)]
            if sel.empty:
                continue
            row[t] = 100 * sel.score.mean()
            row[f"{t}_stderr"] = 100 * sel.stderr.mean()
            row[f"{t}_seeds"] = int(sel.seed.nunique())
            row[f"{t}_seed_std"] = 100 * sel.score.std() if len(sel) > 1 else float("nan")
            row[f"{t}_blind"] = 100 * sel.blind_score.mean()
            row[f"{t}_n"] = int(sel.n.iloc[-1])
            splits = [json.loads(p) for p in sel.get("per_split", []) if isinstance(p, str)]
            for split_name in sorted(splits[-1]) if splits else []:
                scores = [p[split_name]["score"] for p in splits if split_name in p]
                row[f"{t}/{split_name}"] = 100 * sum(scores) / len(scores)
        present = [row[t] for t in tasks if t in row]
        row["avg"] = sum(present) / len(present) if present else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def table_markdown(table: pd.DataFrame, tasks: list[str], metrics: dict[str, str]) -> str:
    """Connectors x tasks in points (score ± stderr, or mean ± std over seeds when there are several),
    blind baselines beside them, then per-split scores."""

    def cell(r, t):
        if pd.isna(r.get(t)):
            return "–"
        k = r.get(f"{t}_seeds", 1)
        if pd.notna(k) and k > 1:
            return f"{r[t]:.1f} ± {r[f'{t}_seed_std']:.1f} ({int(k)} seeds)"
        return f"{r[t]:.1f} ± {r[f'{t}_stderr']:.1f}"

    rows = [[r["connector"], *[cell(r, t) for t in tasks], f"{r['avg']:.1f}"] for _, r in table.iterrows()]
    for _, r in table.iterrows():
        cells = [f"{r[f'{t}_blind']:.1f}" if pd.notna(r.get(f"{t}_blind")) else "–" for t in tasks]
        blind_avg = [r[f"{t}_blind"] for t in tasks if pd.notna(r.get(f"{t}_blind"))]
        avg = f"{sum(blind_avg) / len(blind_avg):.1f}" if blind_avg else "–"
        rows.append([f"blind ({r['connector']}, shuffled pages)", *cells, avg])
    parts = [markdown_rows(["connector", *[f"{t} ({metrics[t]})" for t in tasks], "avg"], rows)]
    split_cols = [c for c in table.columns if "/" in c]
    if split_cols:
        split_rows = [[r["connector"], *[f"{r[c]:.1f}" for c in split_cols]] for _, r in table.iterrows()]
        parts.append(markdown_rows(["connector", *split_cols], split_rows))
    return "\n\n".join(parts) + "\n"


def write_table(output: Path, table: pd.DataFrame, tasks: list[str], metrics: dict[str, str]) -> tuple[Path, Path]:
    csv, md = output / "table.csv", output / "table.md"
    atomic_write(csv, table.to_csv(index=False))
    atomic_write(md, table_markdown(table, tasks, metrics))
    return csv, md
