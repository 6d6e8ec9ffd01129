"""Run directories, the leaderboard CSV and comparison tables.

Layout under an output directory:

    OUTPUT/leaderboard.csv              one row per run (pandas)
    OUTPUT/runs/RUN_ID/config.json      the resolved configuration (rebuilds the run)
    OUTPUT/runs/RUN_ID/predictions.jsonl
    OUTPUT/runs/RUN_ID/results.json     score, stderr, n, blind baseline, timings, versions, commit
    OUTPUT/table.csv, OUTPUT/table.md   connectors x tasks (sweep)

Files are written to a temporary name and renamed, so a failed or killed run never leaves a
partial leaderboard or results file. Names that become path components (task, connector, run id) are
validated, so no name can reach outside the output directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import secrets
import subprocess
import time
from pathlib import Path

import pandas as pd

from .errors import AlignBenchError

LEADERBOARD = "leaderboard.csv"


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, sync, rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise AlignBenchError(f"could not write {str(path)!r} ({exc.strerror or exc}); its previous version, if any, "
                              "is intact: free space, fix permissions or create the folder, then run again") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def safe_name(value: str, what: str) -> str:
    """`value` if it is a single harmless path component (letters, digits, '_', '-', '.'; no '..')."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value or len(value) > 200:
        raise AlignBenchError(f"invalid {what} {value!r}: use letters, digits, '_', '-' and '.' "
                              "(no path separators or '..')")
    return value


def run_path(output: Path, run_id: str) -> Path:
    """OUTPUT/runs/RUN_ID for a validated run id; never a path outside OUTPUT/runs."""
    path = Path(output) / "runs" / safe_name(run_id, "run id")
    if path.resolve().parent != (Path(output) / "runs").resolve():
        raise AlignBenchError(f"run id {run_id!r} resolves outside {Path(output) / 'runs'}; use a plain run id")
    return path


def prepare_output(output: Path) -> Path:
    """Make OUTPUT/runs, check that it is writable and that its leaderboard (if any) is valid."""
    try:
        (output / "runs").mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise AlignBenchError(f"output directory {str(output)!r} is not writable ({exc.strerror}); "
                              "pass --output with a directory you can write to") from None
    check_leaderboard(output / LEADERBOARD)  # a damaged leaderboard stops a run before any work, not after
    return output


def new_run_dir(output: Path, task: str, connector: str, seed: int) -> Path:
    """A fresh directory, created exclusively: two runs with the same settings (even in the same second, with
    the same random suffix) never share one. Task and connector names are validated path components."""
    base = (f"{safe_name(task, 'task name')}-{safe_name(connector, 'connector name')}-s{int(seed)}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
    (output / "runs").mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = run_path(output, base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AlignBenchError(f"could not create a fresh run directory under {output / 'runs'}; clean it up")


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


def markdown_table(table, floatfmt: str | tuple[str, ...] = ".3g") -> str:
    """A DataFrame as a GitHub Markdown table (pandas' `to_markdown`, through tabulate), without the index."""
    return table.to_markdown(index=False, floatfmt=floatfmt)


def machine() -> dict:
    """What produced a figure: processor (and its model name), core count, torch and its threads, accelerator."""
    import torch

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "gpu": gpu}


def write_run(run_dir: Path, config: dict, result: dict, records: list[dict]) -> None:
    atomic_write(run_dir / "config.json", json.dumps(config, indent=2))
    atomic_write(run_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write(run_dir / "results.json", json.dumps(result, indent=2))


def leaderboard_row(run_dir: Path, config: dict, result: dict) -> dict:
    """One leaderboard row; a result without a finite score (a diverged or empty run) is refused."""
    score = result.get("score")
    if result.get("status", "ok") != "ok" or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise AlignBenchError(f"run {run_dir.name} has no valid score (status {result.get('status', 'ok')}, score "
                              f"{score}); it is not added to the leaderboard")
    blind = result.get("blind", {})
    return {
        "run_id": run_dir.name, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "connector": config["connector"], "task": config["task"], "backbone": result.get("backbone_key"),
        "options": " ".join(f"{k}={v}" for k, v in sorted(config.get("connector_args", {}).items())),
        "stage": config["train"]["stage"], "steps": config["train"]["steps"], "lr": config["train"]["lr"],
        "seed": config["data"]["seed"], "init_seed": config["train"]["init_seed"], "metric": result["metric"],
        "score": result["score"], "stderr": result["stderr"], "n": result["n"],
        # the same predictions scored by lmms-eval's definition of the metric (README, "Metrics")
        "score_lmms_eval": result.get("lmms_eval_metric", {}).get("score"),
        "n_skipped": result.get("n_skipped", 0),
        "blind_score": blind.get("score"), "blind_stderr": blind.get("stderr"),
        "per_split": json.dumps(result.get("per_split", {})),
        "train_seconds": result.get("train_seconds"), "eval_seconds": result.get("eval_seconds"),
        "wall_seconds": result.get("wall_seconds"), "evaluator": result.get("evaluator", "alignbench"),
        "commit": result.get("commit"),
        # what trained the weights: the tasks whose training splits were mixed, and the run that trained them
        # when this run re-used weights of the same training configuration
        "train_tasks": "+".join(config.get("train_tasks") or config["data"].get("train_tasks") or [config["task"]]),
        "trained_in": result.get("trained_in"),
        # a re-evaluation (`alignbench eval --checkpoint`) names the run whose weights it scored
    } | ({"checkpoint": result["checkpoint"]} if result.get("checkpoint") else {})


def _csv_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


# The columns every leaderboard has had; a file whose header lacks one of them is not a leaderboard.
REQUIRED_COLUMNS = ("run_id", "connector", "task", "metric", "score")


def leaderboard_fix(output: Path) -> str:
    return (f"rebuild it from the run directories with `alignbench leaderboard --repair --output {str(output)!r}` "
            "(the damaged file is kept as a backup)")


def check_leaderboard(path: Path) -> str:
    """The text of the leaderboard at `path` ("" when there is none yet), validated: UTF-8 without a byte-order
    mark, LF line ends, a header with the leaderboard's columns, every row closed (quotes and final newline),
    as many fields as the header and a finite score. Anything else is one message naming the file, what is wrong
    (with the line) and the repair command: appending to a damaged file could merge the new row into a cut one.

    Hand-written with the csv module rather than pandas, which would guess its way past a ragged or cut row
    and cannot say on which line the damage is."""
    if not path.exists():
        return ""
    where = f"leaderboard {str(path)!r}"
    if path.is_dir():
        raise AlignBenchError(f"{where} is a directory, not a file; move it away and run again")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AlignBenchError(f"{where} cannot be read ({exc.strerror}); fix its permissions and run again") \
            from None

    def bad(what: str) -> AlignBenchError:
        return AlignBenchError(f"{where} is not a valid leaderboard: {what}; {leaderboard_fix(path.parent)}")

    if not data:
        return ""
    if b"\0" in data:
        raise bad("it holds binary data (NUL bytes)")
    if data.startswith(b"\xef\xbb\xbf"):
        raise bad("it starts with a byte-order mark (saved by a spreadsheet?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"it is not UTF-8 text (byte {exc.start})") from None
    if "\r" in text:
        raise bad("it has Windows (CRLF) or CR line ends (saved by a spreadsheet?)")
    if not text.endswith("\n"):
        raise bad(f"its last line ({text.count(chr(10)) + 1}) is cut short: no final newline")
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader)
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing or len(set(header)) != len(header) or header[0] != "run_id":
            raise bad(f"line 1 is not a leaderboard header (missing {', '.join(missing) or 'nothing'}; "
                      f"duplicate columns: {sorted({c for c in header if header.count(c) > 1}) or 'none'}; "
                      "the first column must be run_id)")
        score = header.index("score")
        for cells in reader:
            line = reader.line_num
            if len(cells) != len(header):
                raise bad(f"ragged row at line {line}: {len(cells)} fields, the header has {len(header)}")
            try:
                value = float(cells[score])
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or not cells[0]:
                raise bad(f"the row at line {line} has no run id or no finite score ({cells[score]!r})")
    except csv.Error as exc:
        raise bad(f"line {reader.line_num}: {exc} (a quoted field is not closed?)") from None
    return text


def append_leaderboard(output: Path, row: dict) -> Path:
    """Under a file lock: read and validate (`check_leaderboard`), append, write to a temporary file, sync,
    rename. Processes finishing at once (parallel sweeps, separate runs) serialise here; readers see the old
    file or the new one, never a part.

    Existing rows are kept byte for byte when the new row has no new column; a new column is added at the
    end of the header, empty in the older rows."""
    import fcntl

    path = output / LEADERBOARD
    with open(output / f".{LEADERBOARD}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = check_leaderboard(path)
        header = next(csv.reader([old.splitlines()[0]])) if old else []
        columns = header + [k for k in row if k not in header]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if columns == header:
            buf.write(old)
        else:
            writer.writerow(columns)
            for cells in list(csv.reader(io.StringIO(old)))[1:]:
                writer.writerow(cells + [""] * (len(columns) - len(cells)))
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
        atomic_write(path, buf.getvalue())
    return path


def read_leaderboard(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise AlignBenchError(f"no leaderboard at {str(path)!r}; run `alignbench run` first or pass --output")
    text = check_leaderboard(path)
    if not text:
        raise AlignBenchError(f"leaderboard {str(path)!r} is empty; run `alignbench run` first")
    df = pd.read_csv(io.StringIO(text))
    # Leaderboards written before these columns existed: every row was a training run scored by AlignBench.
    df["evaluator"] = df["evaluator"].fillna("alignbench") if "evaluator" in df else "alignbench"
    if "checkpoint" not in df:
        df["checkpoint"] = pd.Series([None] * len(df), dtype=object)
    return df


def repair_leaderboard(output: Path) -> tuple[Path | None, int, list[str]]:
    """Rebuild OUTPUT/leaderboard.csv from the finished run directories (config.json + results.json), in the
    order they finished; the old file, if any, is renamed to a backup first. Returns (backup, rows written,
    run directories skipped with the reason)."""
    import fcntl

    path = output / LEADERBOARD
    rows, skipped = [], []
    runs = output / "runs"
    finished = sorted((d for d in runs.iterdir() if (d / "results.json").is_file()),
                      key=lambda d: ((d / "results.json").stat().st_mtime, d.name)) if runs.is_dir() else []
    for run_dir in finished:
        try:
            config = json.loads((run_dir / "config.json").read_text())
            result = json.loads((run_dir / "results.json").read_text())
            if config.get("kind") == "checkpoint-eval":
                config = config["checkpoint_config"]
            row = leaderboard_row(run_dir, config, result)
        except (OSError, ValueError, KeyError, TypeError, AlignBenchError) as exc:
            skipped.append(f"{run_dir.name} ({type(exc).__name__}: {exc})")
            continue
        row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((run_dir / "results.json").stat().st_mtime))
        rows.append(row)
    with open(output / f".{LEADERBOARD}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        backup = None
        if path.exists() or path.is_symlink():
            backup = path.with_name(f"{LEADERBOARD}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, backup)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if rows:
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_csv_cell(row.get(c)) for c in columns])
            atomic_write(path, buf.getvalue())
    return backup, len(rows), skipped


def training_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that trained (and were scored by AlignBench), not re-evaluations of a checkpoint."""
    return df[(df.evaluator == "alignbench") & df.checkpoint.isna()]


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of the score across seeds for each (task, connector, training setting); the latest row per
    seed counts."""
    keys = [k for k in ("task", "connector", "backbone", "stage", "steps", "lr", "evaluator") if k in df]
    latest = df.drop_duplicates([*keys, "seed"], keep="last")
    agg = latest.groupby(keys, dropna=False, sort=False).agg(
        mean=("score", "mean"), std=("score", "std"), seeds=("seed", "nunique"),
        blind=("blind_score", "mean")).reset_index()
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

    head = "| connector | " + " | ".join(f"{t} ({metrics[t]})" for t in tasks) + " | avg |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for _, r in table.iterrows():
        cells = [cell(r, t) for t in tasks]
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
