"""The command line generated from the configuration dataclasses: every option comes from one config field, with its
help there; one field gives the same help in every command; `--help` starts without torch; the text of list and
KEY=VALUE options becomes typed values once, with one message when it does not parse."""

import subprocess
import sys

import pytest
import typer

from alignbench.cli import app
from alignbench.cli.options import COMMANDS, flags, parse


def _commands():
    """(command path, click command, its generated flags) for every command of the app."""
    found = []

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        callback = command.callback
        while callback not in COMMANDS and hasattr(callback, "__wrapped__"):
            callback = callback.__wrapped__
        assert callback in COMMANDS, f"alignbench {' '.join(path)} is not generated from a configuration"
        cls, only, skip = COMMANDS[callback]
        found.append((" ".join(path), command, flags(cls, only, skip)))

    walk(typer.main.get_command(app), [])
    return found


COMMAND_LIST = _commands()


def test_every_command_is_generated():
    assert {path for path, _, _ in COMMAND_LIST} == {
        "run",
        "sweep",
        "tune",
        "eval",
        "list",
        "leaderboard",
        "prepare",
        "probe noise",
        "probe image",
        "probe vocab",
        "cost",
        "report",
    }


@pytest.mark.parametrize("path,command,generated", COMMAND_LIST, ids=[c[0] for c in COMMAND_LIST])
def test_every_option_comes_from_a_config_field_with_help(path, command, generated):
    options = {p.name: p for p in command.params if p.name != "help"}
    assert set(options) == {f.param for f in generated}, f"alignbench {path}: options not generated from a field"
    for flag in generated:
        assert options[flag.param].help and options[flag.param].help.strip(), f"{path} {flag.flag} has no help"


def test_a_field_has_one_help_and_one_flag_in_every_command():
    seen: dict[str, set] = {}
    for _, command, generated in COMMAND_LIST:
        helps = {p.name: p.help for p in command.params}
        for flag in generated:
            seen.setdefault(flag.source, set()).add((flag.flag, helps[flag.param]))
    diverging = {source: sorted(found) for source, found in seen.items() if len(found) > 1}
    assert not diverging, diverging
    # The options a run and a search share are the same fields (--connector-arg is not: CONNECTOR.OPTION=VALUE in a
    # command of several connectors)
    for option in ("--backbone", "--data", "--steps", "--seed", "--device", "--init-seed", "--train-tasks"):
        sources = {f.source for p, _, g in COMMAND_LIST for f in g if f.flag == option and p in ("run", "tune")}
        assert len(sources) == 1, (option, sources)


def test_help_starts_without_torch():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom alignbench.cli import app\n"
        "for args in (['--help'], ['run', '--help'], ['sweep', '--help'], ['probe', 'noise', '--help']):\n"
        "    out = CliRunner().invoke(app, args)\n"
        "    assert out.exit_code == 0 and '--' in out.output, out.output\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_options_build_typed_configs():
    cmd = parse(
        app,
        [
            "sweep",
            "--connectors",
            "mlp,align",
            "--seeds",
            "0,2",
            "--connector-arg",
            "align.ln2_lr_mult=10",
            "--slurm-arg",
            "account=lab",
            "--steps",
            "5",
            "--no-feature-cache",
        ],
    )
    assert cmd.selection.connectors == ["mlp", "align"] and cmd.seeds == [0, 2]
    assert cmd.selection.connector_args == ["align.ln2_lr_mult=10"] and cmd.launch.slurm_args == {"account": "lab"}
    assert cmd.run.train.steps == 5 and cmd.run.train.batch_size is None  # left to the backbone's recipe
    assert cmd.session.feature_cache is False and cmd.session.reuse_from == []
    tune = parse(app, ["tune", "--lrs", "1e-3,0.01", "--backbone", "smollm2", "--data", "hf"])
    assert tune.lrs == [1e-3, 0.01] and tune.run.backbone.name == "smollm2" and tune.run.data.source == "hf"
    run = parse(app, ["run", "--connector-arg", "num_latents=16", "--limit", "5", "--no-blind"])
    assert run.run.connector_args == {"num_latents": "16"} and run.run.data.eval_limit == 5
    assert run.run.eval.blind is False


@pytest.mark.parametrize("command,blind", [("sweep", True), ("tune", False)])
def test_commands_of_many_runs_pass_the_scoring_options_to_every_run(command, blind):
    """--eval-dtype and --eval-batch-size reach each run a sweep or a search makes; the blind baseline stays the
    command's own choice (a sweep scores it, a search on the validation split does not)."""
    from alignbench.run.sweep import sweep_configs, tune_configs

    cmd = parse(app, [command, "--connectors", "mlp,align", "--eval-dtype", "float32", "--eval-batch-size", "16"])
    configs = sweep_configs(cmd)[0] if command == "sweep" else tune_configs(cmd)
    assert len(configs) >= 2 and {c.connector for c in configs} == {"mlp", "align"}
    assert {(c.eval.dtype, c.eval.batch_size, c.eval.blind) for c in configs} == {("float32", 16, blind)}
    assert "--blind" not in {f.flag for p, _, g in COMMAND_LIST if p == command for f in g}
    defaults = parse(app, [command, "--connectors", "mlp"])
    configs = sweep_configs(defaults)[0] if command == "sweep" else tune_configs(defaults)
    assert {(c.eval.dtype, c.eval.batch_size) for c in configs} == {("auto", 64)}


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["tune", "--lrs", "1e-3,fast"], "--lrs '1e-3,fast' must be comma-separated numbers, e.g. 1e-3,3e-3"),
        (["sweep", "--seeds", "0,one"], "--seeds '0,one' must be comma-separated integers, e.g. 0,1,2"),
        (["sweep", "--tasks", " , "], "--tasks is empty; give a comma-separated list"),
        (["run", "--connector-arg", "num_latents"], "--connector-arg 'num_latents' is not KEY=VALUE"),
        (["probe", "vocab", "--run", "x", "--top-k", "5,big"], "--top-k '5,big' must be comma-separated integers"),
    ],
)
def test_text_that_does_not_parse_is_one_message(argv, needle):
    from alignbench.errors import AlignBenchError

    with pytest.raises(AlignBenchError) as info:
        parse(app, argv)
    assert needle in str(info.value)
