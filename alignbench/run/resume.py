"""A run directory that outlives its process: the one writer lock it is written under, the status a run that
stopped leaves in it, and continuing it (`alignbench run --resume RUN_DIR`): the same configuration only, its
checkpoint and prediction journal picked up where they stopped, a run that had finished only given its missing
leaderboard row."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config.run import RunConfig, read_saved_config
from ..errors import AlignBenchError
from ..io import atomic_write, lock
from ..model.checkpoint import remove_checkpoints
from .leaderboard import LEADERBOARD, append_leaderboard, leaderboard_row, read_leaderboard
from .outputs import new_run_dir, write_run

RUN_STATUS = "status.json"  # written when a run stops without results (training diverged, a connector failed)
PREDICTIONS_JOURNAL = "predictions.partial.jsonl"  # predictions so far, while the evaluation runs
SKIPPED = "skipped.jsonl"  # RUN_DIR/skipped.jsonl: every row left out, with its split, id, reason and detail
# Fields of config.json that describe how a run was spread over processes, not what it computes: a run may
# be resumed on another number of processes (the training key includes the placement, which changes rounding).
PLACEMENT_KEYS = ("distributed", "resolved_device", "training_key")
WRITER_LOCK = ".writer.lock"  # RUN_DIR/.writer.lock: held by the one process writing the run directory
WRITER_PID = ".writer.pid"

# The run directory this process is writing (what an interrupted command names in its resume hint).
ACTIVE_RUN: Path | None = None
_held: list = []  # the writer locks this process holds


def resume_command(run_dir: Path) -> str:
    """The exact command that continues `run_dir`: absolute and single-quoted, so it pastes into any shell."""
    return "alignbench run --resume '" + str(Path(run_dir).resolve()).replace("'", "'\\''") + "'"


def hold_run_dir(run_dir: Path) -> None:
    """Take the run directory's exclusive writer lock for the rest of the run (released by `run`, or by the OS
    when the process dies); a second writer gets one line naming the PID that holds it."""
    from filelock import Timeout

    global ACTIVE_RUN
    held = lock(run_dir / WRITER_LOCK, timeout=0)
    try:
        held.acquire()
    except Timeout:
        try:
            pid = (run_dir / WRITER_PID).read_text().strip() or "unknown"
        except OSError:
            pid = "unknown"
        raise AlignBenchError(
            f"{run_dir} is being written by another process (PID {pid}); wait for it to end, or "
            "stop it before resuming this run"
        ) from None
    _held.append(held)
    atomic_write(run_dir / WRITER_PID, f"{os.getpid()}\n")
    ACTIVE_RUN = run_dir


def release_run_dirs() -> None:
    """Give up the writer locks this process holds: the run has written everything it writes, so its writer files
    go first, then the lock itself."""
    while _held:
        held = _held.pop()
        folder = Path(held.lock_file).parent
        (folder / WRITER_PID).unlink(missing_ok=True)
        Path(held.lock_file).unlink(missing_ok=True)
        held.release()


def finished() -> None:
    """No run directory is being written any more (an interrupted command then names none)."""
    global ACTIVE_RUN
    ACTIVE_RUN = None


def check_resumable(run_dir: Path, output: Path) -> Path:
    """The run directory to continue: one under OUTPUT/runs, started (config.json) and not diverged."""
    if not run_dir.is_dir() or run_dir.resolve().parent != (output / "runs").resolve():
        raise AlignBenchError(
            f"--resume {str(run_dir)!r} is not a run directory under {output / 'runs'}; "
            "give the RUN_DIR a run printed when it started"
        )
    read_saved_config(run_dir)  # it started: a configuration to continue with
    status = run_dir / RUN_STATUS
    if status.is_file():
        try:
            saved = json.loads(status.read_text())
        except ValueError:
            saved = {"status": "diverged", "message": f"{status} is unreadable"}
        if saved.get("status") != "failed":  # a diverged run is over; a failed one continues once its cause is fixed
            raise AlignBenchError(f"{run_dir} stopped for good ({saved.get('message')}); start a new run")
    return run_dir


def finish_listed(run_dir: Path, output: Path, log) -> dict | None:
    """A run killed after writing results.json: add its missing leaderboard row, or say it is complete. None
    when the run has no results yet (it is to be continued)."""
    if not (run_dir / "results.json").is_file():
        return None
    config = read_saved_config(run_dir)
    result = json.loads((run_dir / "results.json").read_text())
    board = output / LEADERBOARD
    if board.is_file() and run_dir.name in set(read_leaderboard(board).run_id.astype(str)):
        raise AlignBenchError(f"{run_dir} is already finished and on the leaderboard; nothing to resume")
    append_leaderboard(output, leaderboard_row(run_dir, config, result))
    remove_checkpoints(run_dir)
    (run_dir / PREDICTIONS_JOURNAL).unlink(missing_ok=True)
    log(f"{run_dir} was finished; its leaderboard row is now written")
    return result | {"run_dir": str(run_dir)}


def open_run_dir(config: dict, output: Path, task: str, cfg: RunConfig, resume: Path | None) -> Path:
    if resume is not None:
        saved = read_saved_config(resume)
        differ = sorted(
            k
            for k in set(saved) | set(config)
            if k not in PLACEMENT_KEYS and _comparable(saved, k) != _comparable(config, k)
        )
        if differ:
            raise AlignBenchError(
                f"{resume} was started with another configuration ({', '.join(differ)} differ); "
                "resume it with its own configuration or start a new run"
            )
        return resume
    run_dir = new_run_dir(output, task, cfg.connector, cfg.data.seed)
    atomic_write(run_dir / "config.json", json.dumps(config, indent=2))
    return run_dir


def _comparable(config: dict, key: str):
    """A config.json entry as a resume compares it: where the curves stream (`train.report_to`) may change, and
    connector options saved as text (before they were typed) are their typed values."""
    value = config.get(key)
    if key == "train" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "report_to"}
    if key == "connector_args" and isinstance(value, dict):
        return RunConfig.from_dict(config).connector_args
    return value


def write_skipped(run_dir: Path, skipped: list[dict]) -> None:
    """The rows the loader left out, one JSON line each, so that a user can find them (nothing when none)."""
    if skipped:
        atomic_write(run_dir / SKIPPED, "".join(json.dumps(row, default=str) + "\n" for row in skipped))


def write_finished(
    run_dir: Path, output: Path, config: dict, result: dict, records: list[dict], skipped: list[dict]
) -> None:
    write_skipped(run_dir, skipped)
    write_run(run_dir, config, result, records)
    append_leaderboard(output, leaderboard_row(run_dir, config, result))
    remove_checkpoints(run_dir)
    (run_dir / PREDICTIONS_JOURNAL).unlink(missing_ok=True)
