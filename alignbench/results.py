"""Run directories, the leaderboard CSV and comparison tables.

Layout under an output directory:

    OUTPUT/leaderboard.csv              one row per run (pandas)
    OUTPUT/runs/RUN_ID/config.json      the resolved configuration (rebuilds the run)
    OUTPUT/runs/RUN_ID/predictions.jsonl
    OUTPUT/runs/RUN_ID/results.json     score, stderr, n, blind baseline, timings, versions, commit
    OUTPUT/table.csv, OUTPUT/table.md   connectors x tasks (sweep)

Files are written to a temporary name and renamed, so a failed or killed run never leaves a
partial leaderboard or results file.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import time
from pathlib import Path

import pandas as pd

from .errors import AlignBenchError

LEADERBOARD = "leaderboard.csv"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare_output(output: Path) -> Path:
    try:
        (output / "runs").mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise AlignBenchError(f"output directory {str(output)!r} is not writable ({exc.strerror}); "
                              "pass --output with a directory you can write to") from None
    return output


def new_run_dir(output: Path, task: str, connector: str, seed: int) -> Path:
    """A fresh directory; two runs with the same settings never share one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = output / "runs" / f"{task}-{connector}-s{seed}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import datasets
    import torch
    import transformers

    from . import __version__

    return {"alignbench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "python": platform.python_version()}


def machine() -> dict:
    """What produced a figure: processor, core count, accelerator."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu}


def write_run(run_dir: Path, config: dict, result: dict, records: list[dict]) -> None:
    atomic_write(run_dir / "config.json", json.dumps(config, indent=2))
    atomic_write(run_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write(run_dir / "results.json", json.dumps(result, indent=2))


def leaderboard_row(run_dir: Path, config: dict, result: dict) -> dict:
    blind = result.get("blind", {})
    return {
        "run_id": run_dir.name, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "connector": config["connector"], "task": config["task"], "backbone": result.get("backbone_key"),
        "stage": config["train"]["stage"], "steps": config["train"]["steps"], "lr": config["train"]["lr"],
        "seed": config["data"]["seed"], "init_seed": config["train"]["init_seed"], "metric": result["metric"],
        "score": result["score"], "stderr": result["stderr"], "n": result["n"],
        "blind_score": blind.get("score"), "blind_stderr": blind.get("stderr"),
        "per_split": json.dumps(result.get("per_split", {})),
        "train_seconds": result.get("train_seconds"), "eval_seconds": result.get("eval_seconds"),
        "wall_seconds": result.get("wall_seconds"), "evaluator": "alignbench", "commit": result.get("commit"),
    }


def append_leaderboard(output: Path, row: dict) -> Path:
    """Under a file lock: read, append, write to a temporary file, rename. Existing rows are never lost or
    rewritten, and processes finishing at once (parallel sweeps) serialise here."""
    import fcntl

    path = output / LEADERBOARD
    with open(output / f".{LEADERBOARD}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        frame = pd.DataFrame([row])
        if path.exists():
            frame = pd.concat([read_leaderboard(path), frame], ignore_index=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return path


def read_leaderboard(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise AlignBenchError(f"no leaderboard at {str(path)!r}; run `alignbench run` first or pass --output")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AlignBenchError(f"leaderboard {str(path)!r} is not a readable CSV ({exc})") from None


def comparison_table(df: pd.DataFrame, connectors: list[str], tasks: list[str]) -> pd.DataFrame:
    """Connectors x tasks (paper Table 2 layout): score, stderr and blind score per cell, plus the average.

    Where a pair has several rows (seeds), the latest row per (connector, task, seed) is kept and the
    mean over seeds is reported."""
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
    """Connectors x tasks in points (score ± stderr), blind baselines beside them, then per-split scores."""
    head = "| connector | " + " | ".join(f"{t} ({metrics[t]})" for t in tasks) + " | avg |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for _, r in table.iterrows():
        cells = [f"{r[t]:.1f} ± {r[f'{t}_stderr']:.1f}" if pd.notna(r.get(t)) else "–" for t in tasks]
        lines.append(f"| {r['connector']} | " + " | ".join(cells) + f" | {r['avg']:.1f} |")
    for _, r in table.iterrows():
        cells = [f"{r[f'{t}_blind']:.1f}" if pd.notna(r.get(f"{t}_blind")) else "–" for t in tasks]
        blind_avg = [r[f"{t}_blind"] for t in tasks if pd.notna(r.get(f"{t}_blind"))]
        avg = f"{sum(blind_avg) / len(blind_avg):.1f}" if blind_avg else "–"
        lines.append(f"| blind ({r['connector']}, shuffled pages) | " + " | ".join(cells) + f" | {avg} |")
    split_cols = [c for c in table.columns if "/" in c]
    if split_cols:
        lines += ["", "| connector | " + " | ".join(split_cols) + " |", "|" + "---|" * (len(split_cols) + 1)]
        for _, r in table.iterrows():
            lines.append(f"| {r['connector']} | " + " | ".join(f"{r[c]:.1f}" for c in split_cols) + " |")
    return "\n".join(lines) + "\n"


def write_table(output: Path, table: pd.DataFrame, tasks: list[str], metrics: dict[str, str]) -> tuple[Path, Path]:
    csv, md = output / "table.csv", output / "table.md"
    atomic_write(csv, table.to_csv(index=False))
    atomic_write(md, table_markdown(table, tasks, metrics))
    return csv, md
