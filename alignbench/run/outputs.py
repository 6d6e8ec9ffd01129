"""An output directory and its run directories: made writable and checked before any work, named so that no name
reaches outside them, and what every result records about where it was made (commit, versions, machine).

Layout under an output directory:

    OUTPUT/leaderboard.csv              one row per run (`alignbench.run.leaderboard`)
    OUTPUT/runs/RUN_ID/config.json      the resolved configuration (rebuilds the run)
    OUTPUT/runs/RUN_ID/predictions.jsonl
    OUTPUT/runs/RUN_ID/results.json     score, stderr, n, blind baseline, timings, versions, commit
    OUTPUT/table.csv, OUTPUT/table.md   connectors x tasks (sweep, `alignbench.reporting.leaderboard`)

Files are written atomically (`alignbench.io`), so a failed or killed run never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import subprocess
import time
from pathlib import Path

from ..errors import AlignBenchError
from ..io import atomic_write
from .leaderboard import LEADERBOARD, check_leaderboard

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def safe_name(value: str, what: str) -> str:
    """`value` if it is a single harmless path component (letters, digits, '_', '-', '.'; no '..')."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value or len(value) > 200:
        raise AlignBenchError(
            f"invalid {what} {value!r}: use letters, digits, '_', '-' and '.' (no path separators or '..')"
        )
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
        raise AlignBenchError(
            f"output directory {str(output)!r} is not writable ({exc.strerror}); "
            "pass --output with a directory you can write to"
        ) from None
    check_leaderboard(output / LEADERBOARD)  # a damaged leaderboard stops a run before any work, not after
    return output


def new_run_dir(output: Path, task: str, connector: str, seed: int) -> Path:
    """A fresh directory, created exclusively: two runs with the same settings (even in the same second, with
    the same random suffix) never share one. Task and connector names are validated path components."""
    base = (
        f"{safe_name(task, 'task name')}-{safe_name(connector, 'connector name')}-s{int(seed)}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    )
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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import datasets
    import torch
    import transformers

    from .. import __version__

    return {
        "alignbench": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "python": platform.python_version(),
    }


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
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
    }


def write_run(run_dir: Path, config: dict, result: dict, records: list[dict]) -> None:
    atomic_write(run_dir / "config.json", json.dumps(config, indent=2))
    atomic_write(run_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write(run_dir / "results.json", json.dumps(result, indent=2))
