"""Command line: `alignbench run | sweep | tune | eval | list | leaderboard | prepare | probe | cost | report`.

Each command's options are generated from its configuration dataclass (`alignbench.config`, through `options`); one
module per command. Every user-facing failure is an `AlignBenchError`: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from ..errors import AlignBenchError
from . import cost, leaderboard, prepare, probe, report, run, sweep, tune
from . import eval as eval_command
from . import list as list_command
from .common import err_console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compare vision-language connectors on the same backbone, data and budget.",
)
app.command("run")(run.run)
app.command("sweep")(sweep.sweep)
app.command("tune")(tune.tune)
app.command("eval")(eval_command.eval_cmd)
app.command("list")(list_command.list_cmd)
app.command("leaderboard")(leaderboard.leaderboard)
app.command("prepare")(prepare.prepare)
app.add_typer(probe.probe_app, name="probe")
app.command("cost")(cost.cost)
app.command("report")(report.report)

# Commands that run on several processes (torchrun, accelerate launch); the others refuse to.
DISTRIBUTED_COMMANDS = ("run", "eval", "sweep", "tune")


def _echoed(exc: AlignBenchError) -> bool:
    """Whether rank 0 reports this error for every process: a check every process made alike before they met,
    or an outcome decided together (broadcast by rank 0, or computed from all-reduced numbers)."""
    if os.environ.get("RANK", "0") in ("", "0"):
        return False
    from ..dist.context import SharedError
    from ..train.loop import TrainingDiverged

    td = sys.modules.get("torch.distributed")
    grouped = td is not None and td.is_available() and td.is_initialized()
    return not grouped or isinstance(exc, (SharedError, TrainingDiverged))


def _refuse_unsupported_command() -> None:
    from ..dist.env import env_layout

    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if env_layout()[1] > 1 and command not in DISTRIBUTED_COMMANDS:
        raise AlignBenchError(
            f"alignbench {command} runs as one process; start it without torchrun or accelerate "
            f"launch (commands that run on several: {', '.join(DISTRIBUTED_COMMANDS)})"
        )


def _error(message: str) -> None:
    rank = os.environ.get("RANK", "0")
    where = "" if rank in ("", "0") else f"(rank {rank}) "
    err_console.print(f"[red]error:[/red] {where}{escape(message)}", highlight=False, soft_wrap=True)


def _interrupted() -> None:
    """One line: what is intact, and the exact command that continues the interrupted run (if one had begun)."""
    active = sys.modules.get("alignbench.run.resume")
    run_dir = getattr(active, "ACTIVE_RUN", None) if active else None
    hint = f"; continue it with: {active.resume_command(run_dir)}" if run_dir is not None else ""
    err_console.print(
        f"[red]interrupted[/red]; results, checkpoints and the leaderboard already written are intact{escape(hint)}",
        highlight=False,
        soft_wrap=True,
    )


# Typer's (and click's) command-line errors, whichever of them this typer raises.
_CLI_ERRORS = tuple(
    {getattr(typer, "TyperException", None), getattr(sys.modules.get("click"), "ClickException", None)} - {None}
)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _refuse_unsupported_command()
        # Not standalone: click would turn Ctrl-C into a silent exit and a bad value into a usage box; both are
        # reported here in one line instead.
        code = app(standalone_mode=False)
        if code == 130:  # typer's way of reporting Ctrl-C: an exit code (the KeyboardInterrupt is swallowed)
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except _CLI_ERRORS as exc:  # a bad option or value: one line naming it, and where the help is
        if type(exc).__name__ == "NoArgsIsHelpError":  # `alignbench` alone: the help
            exc.show()
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        _error(f"{exc.format_message()} (see `{ctx.command_path if ctx is not None else 'alignbench'} --help`)")
        sys.exit(2)
    except AlignBenchError as exc:
        if not _echoed(exc):
            _error(str(exc))
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
        sys.exit(130)
    except OSError as exc:  # a file-system error no closer handler named: the file, the error, what is intact
        where = f" at {str(exc.filename)!r}" if exc.filename else ""
        _error(
            f"file-system error{where}: {exc.strerror or exc}; files already written are intact: free space or "
            "fix permissions, then run again (an interrupted run continues with --resume)"
        )
        sys.exit(2)
    finally:
        if "torch.distributed" in sys.modules:
            from ..dist.context import shutdown

            shutdown()
