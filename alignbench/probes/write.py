"""A probe's results: written once under OUTPUT/probes/KIND-TASK-STAMP/ (probe.json, table.md, table.csv and a
plot), and its tables in the paper's layout."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..io import atomic_path, atomic_write
from ..reporting.tables import markdown_rows
from ..run.outputs import machine


def new_probe_dir(output: Path, kind: str, task: str) -> Path:
    import secrets

    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = output / "probes" / f"{kind}-{task}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue


def summary_rows(probe: dict) -> list[dict]:
    """One row per connector (mean over seeds) per condition: the table under a noise or image probe."""
    import pandas as pd

    rows = []
    for r in probe["runs"]:
        for key, s in r["scores"].items():
            rows.append(
                {
                    "connector": r["connector"],
                    "seed": r["seed"],
                    "condition": key,
                    "score": s["score"],
                    "stderr": s["stderr"],
                    "drift": r.get("drift", {}).get(key),
                }
            )
    df = pd.DataFrame(rows)
    agg = (
        df.groupby(["connector", "condition"], sort=False)
        .agg(
            score=("score", "mean"),
            seed_std=("score", "std"),
            stderr=("stderr", "mean"),
            drift=("drift", "mean"),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    return agg.to_dict("records")


def probe_markdown(probe: dict) -> str:
    """Paper Table 5 layout: clean score, score under each condition, drop at the strongest, per connector."""
    rows = summary_rows(probe)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    clean_key = "0" if probe["kind"] == "noise" else "clean"
    worst = conditions[-1]
    by = {(r["connector"], r["condition"]): r for r in rows}
    connectors = list(dict.fromkeys(r["connector"] for r in rows))
    label = (lambda c: f"σ={c}") if probe["kind"] == "noise" else (lambda c: c)
    noise = probe["kind"] == "noise"
    head = ["connector", *[label(c) for c in conditions], f"drop ({label(worst)})" if noise else "mean drop"]
    if noise:
        head.append(f"cosine drift ({label(worst)})")
    table = []
    for c in connectors:
        cells = [c]
        for cond in conditions:
            r = by.get((c, cond))
            cells.append("–" if r is None else f"{100 * r['score']:.1f} ± {100 * r['stderr']:.1f}")
        clean, last = by.get((c, clean_key)), by.get((c, worst))
        others = [by[(c, k)]["score"] for k in conditions if k != clean_key and (c, k) in by]
        if clean is None or not others:
            cells.append("–")
        elif noise:
            cells.append(f"{100 * (clean['score'] - last['score']):+.1f}")
        else:
            cells.append(f"{100 * (clean['score'] - sum(others) / len(others)):+.1f}")
        if noise:
            cells.append("–" if last is None or last["drift"] is None else f"{last['drift']:.4f}")
        table.append(cells)
    seeds = sorted({r["seed"] for r in probe["runs"]})
    note = f"{probe['metric']} in points, mean ± stderr over {len(seeds)} seed(s) {seeds}"
    if probe["kind"] == "noise":
        note += f"; σ {probe['sigma_mode']}"
        if probe["sigma_mode"] == "relative":
            note += " (multiples of the clean features' standard deviation)"
    return f"{note}\n\n" + markdown_rows(head, table) + "\n"


def plot(probe: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(probe)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in dict.fromkeys(r["connector"] for r in rows):
        mine = {r["condition"]: r for r in rows if r["connector"] == c}
        xs = [k for k in conditions if k in mine]
        ys = [100 * mine[k]["score"] for k in xs]
        es = [1.96 * 100 * mine[k]["stderr"] for k in xs]
        if probe["kind"] == "noise":
            ax.errorbar([float(x) for x in xs], ys, yerr=es, marker="o", capsize=3, label=c)
        else:
            ax.errorbar(range(len(xs)), ys, yerr=es, marker="o", capsize=3, label=c)
    if probe["kind"] == "noise":
        ax.set_xlabel(f"σ ({probe['sigma_mode']})")
    else:
        ax.set_xticks(range(len(conditions)), conditions, rotation=30)
    ax.set_ylabel(f"{probe['metric']} (points, ±95% CI)")
    ax.set_title(f"{probe['kind']} probe on {probe['task']}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def vocab_markdown(probe: dict) -> str:
    a, p = probe["averaged"], probe["per_patch"]
    stats = [
        ["largest single-token probability (averaged)", f"{a['max_prob']:.4f}"],
        ["entropy of the averaged distribution (nats)", f"{a['entropy']:.3f} ({a['entropy_over_log_v']:.2f} of log V)"],
        ["tokens above 1e-6", f"{a['tokens_above_1e-6']} of {probe['vocab_size']}"],
        ["per-patch mean top probability", f"{p['mean_top_prob']:.3f}"],
        ["per-patch mean entropy (nats)", f"{p['mean_entropy']:.3f}"],
    ]
    if "reading" in probe:
        r = probe["reading"]
        stats += [
            ["top token = the glyph in the cell (ink cells)", f"{100 * r['top_token_is_cell_glyph']:.1f} %"],
            ["mean probability of the cell's glyph (ink cells)", f"{r['mean_prob_of_cell_glyph']:.3f}"],
        ]
    pruning = [[str(row["k"]), f"{100 * row['score']:.1f} ± {100 * row['stderr']:.1f}"] for row in probe["pruning"]]
    lines = [
        f"ALIGN run `{probe['run']}` on {probe['task']}: distribution over the {probe['vocab_size']}-token "
        f"vocabulary averaged over {probe['patches']} patches of {probe['docs']} pages.",
        "",
        markdown_rows(["statistic", "value"], stats),
        "",
        "Top tokens: " + ", ".join(f"`{t['token']!s}` {t['prob']:.3f}" for t in a["top_tokens"][:10]),
        "",
        markdown_rows(["tokens kept (top-k)", "score"], pruning),
    ]
    return "\n".join(lines) + "\n"


def write_probe(output: Path, probe: dict, command: str, seconds: float) -> Path:
    probe = {**probe, "command": command, "wall_seconds": round(seconds, 1), "machine": machine()}
    d = new_probe_dir(output, probe["kind"], probe["task"])
    if probe["kind"] == "vocab":
        atomic_write(d / "table.md", vocab_markdown(probe))
    else:
        atomic_write(d / "table.md", probe_markdown(probe))
        import pandas as pd

        atomic_write(d / "table.csv", pd.DataFrame(summary_rows(probe)).to_csv(index=False))
        plot(probe, d / "plot.png")
    atomic_write(d / "probe.json", json.dumps(probe, indent=1))
    return d
