"""The `alignbench` command as a user runs it: in a subprocess (exit codes and stderr as a user sees them), or in this
process through its console entry point (so that a test can monkeypatch what it calls)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest


def cli_env(env: dict | None = None) -> dict:
    # A wide console, so rich tables are not elided. One thread per process: the tests start several at once on a
    # small machine, tiny matrices gain nothing from threads that wait on each other, and every compared run uses
    # the same thread count.
    return {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1", **(env or {})}


def command(*args, optimize: bool = False) -> list[str]:
    """The console entry point's command line (`python -O` with `optimize`, where `assert` statements are gone)."""
    return [sys.executable, *(["-O"] if optimize else []), "-m", "alignbench", *map(str, args)]


def flags(**options) -> list[str]:
    """Command-line options from keywords: flags(steps=2, batch_size=4) == ["--steps", "2", "--batch-size", "4"]."""
    return [text for key, value in options.items() for text in (f"--{key.replace('_', '-')}", str(value))]


def cli(*args, cwd=None, env: dict | None = None, optimize: bool = False, timeout: int = 600):
    """Run `alignbench ARGS` in a subprocess; `env` adds to (or overrides) this process's environment."""
    return subprocess.run(
        command(*args, optimize=optimize), capture_output=True, text=True, cwd=cwd, timeout=timeout, env=cli_env(env)
    )


def _default_sigint() -> None:
    # Ctrl-C as a terminal delivers it: a suite started in the background (`pytest &`) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler in the child, so the default disposition is restored first.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_start(*args, cwd=None) -> subprocess.Popen:
    """`alignbench ARGS` started in the background, its output piped."""
    return subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=cli_env(),
        preexec_fn=_default_sigint,
    )


def main_in_process(monkeypatch, capsys, *args) -> tuple[int | None, str, str]:
    """The console entry point in this process: exit code, stdout, stderr."""
    from alignbench import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["alignbench", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()  # only what this command prints
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def one_line(text: str) -> str:
    """`text` is one line without a traceback; returned with its white space folded."""
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    return " ".join(text.split())


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with exit 2 and exactly one line on stderr (no traceback) holding every needle."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, (done.returncode, done.stderr)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def no_run_directory(output) -> bool:
    """Nothing was started in OUTPUT: no run directory exists under it."""
    runs = output / "runs"
    return not runs.exists() or not any(runs.iterdir())
