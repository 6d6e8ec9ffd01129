"""The leaderboard: OUTPUT/leaderboard.csv, one row per run, appended under a lock by every process that finishes a
run, validated before every append (a damaged file is one message and a repair command, never merged into), and
rebuilt from the run directories when it is damaged."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import pandas as pd

from ..config.run import option_text, read_saved_config
from ..errors import AlignBenchError
from ..io import atomic_write, lock

LEADERBOARD = "leaderboard.csv"


def leaderboard_row(run_dir: Path, config: dict, result: dict) -> dict:
    """One leaderboard row; a result without a finite score (a diverged or empty run) is refused."""
    score = result.get("score")
    if result.get("status", "ok") != "ok" or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise AlignBenchError(
            f"run {run_dir.name} has no valid score (status {result.get('status', 'ok')}, score "
            f"{score}); it is not added to the leaderboard"
        )
    blind = result.get("blind", {})
    return {
        "run_id": run_dir.name,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "connector": config["connector"],
        "task": config["task"],
        "backbone": result.get("backbone_key"),
        "options": " ".join(f"{k}={option_text(v)}" for k, v in sorted(config.get("connector_args", {}).items())),
        "stage": config["train"]["stage"],
        "steps": config["train"]["steps"],
        "lr": config["train"]["lr"],
        "seed": config["data"]["seed"],
        "init_seed": config["train"]["init_seed"],
        "metric": result["metric"],
        "score": result["score"],
        "stderr": result["stderr"],
        "n": result["n"],
        # the same predictions scored by lmms-eval's definition of the metric (docs/lmms-eval.md)
        "score_lmms_eval": result.get("lmms_eval_metric", {}).get("score"),
        "n_skipped": result.get("n_skipped", 0),
        "blind_score": blind.get("score"),
        "blind_stderr": blind.get("stderr"),
        "per_split": json.dumps(result.get("per_split", {})),
        "train_seconds": result.get("train_seconds"),
        "eval_seconds": result.get("eval_seconds"),
        "wall_seconds": result.get("wall_seconds"),
        "evaluator": result.get("evaluator", "alignbench"),
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
    return (
        f"rebuild it from the run directories with `alignbench leaderboard --repair --output {str(output)!r}` "
        "(the damaged file is kept as a backup)"
    )


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
        raise AlignBenchError(f"{where} cannot be read ({exc.strerror}); fix its permissions and run again") from None

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
            raise bad(
                f"line 1 is not a leaderboard header (missing {', '.join(missing) or 'nothing'}; "
                f"duplicate columns: {sorted({c for c in header if header.count(c) > 1}) or 'none'}; "
                "the first column must be run_id)"
            )
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
    path = output / LEADERBOARD
    with lock(output / f".{LEADERBOARD}.lock"):
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
    path = output / LEADERBOARD
    rows, skipped = [], []
    runs = output / "runs"
    finished = (
        sorted(
            (d for d in runs.iterdir() if (d / "results.json").is_file()),
            key=lambda d: ((d / "results.json").stat().st_mtime, d.name),
        )
        if runs.is_dir()
        else []
    )
    for run_dir in finished:
        try:
            config = read_saved_config(run_dir)
            result = json.loads((run_dir / "results.json").read_text())
            if config.get("kind") == "checkpoint-eval":
                config = config["checkpoint_config"]
            row = leaderboard_row(run_dir, config, result)
        except (OSError, ValueError, KeyError, TypeError, AlignBenchError) as exc:
            skipped.append(f"{run_dir.name} ({type(exc).__name__}: {exc})")
            continue
        row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((run_dir / "results.json").stat().st_mtime))
        rows.append(row)
    with lock(output / f".{LEADERBOARD}.lock"):
        backup = None
        if path.exists() or path.is_symlink():
            backup = path.with_name(f"{LEADERBOARD}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(backup)
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
