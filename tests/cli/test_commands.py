"""The command line as a user drives it: run, sweep, list, leaderboard, and bad input."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from alignbench.cli import app
from alignbench.connector import CONNECTORS
from alignbench.task import TASKS
from tests.support.cli import cli, flags

SMALL = flags(steps=3, batch_size=4, train_docs=6, eval_questions=6)


@pytest.fixture(scope="module")
def listed():
    """What `alignbench list` prints, on a console wide enough that no name is wrapped or elided."""
    from rich.console import Console

    with pytest.MonkeyPatch.context() as m:
        m.setattr("alignbench.cli.common.console", Console(width=250))
        out = CliRunner().invoke(app, ["list"])
    assert out.exit_code == 0, out.output
    return out.output


@pytest.mark.parametrize("name", [*CONNECTORS.builtins(), *TASKS.builtins()])
def test_list_shows_every_connector_and_task(listed, name):
    assert f"│ {name} " in listed


def test_list_shows_the_connectors_options(listed):
    assert "num_latents=64" in listed


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["run", "--connector", "alignn"],
            "unknown connector 'alignn'; known connectors: " + ", ".join(CONNECTORS.names()),
        ),
        (["run", "--task", "docvqa_val"], "unknown task 'docvqa_val'; known tasks: " + ", ".join(TASKS.names())),
        (["run", "--stage", "half"], "unknown stage 'half'"),
        (["run", "--steps", "0"], "--steps must be at least 1"),
        (["run", "--connector", "perceiver", "--connector-arg", "depth=deep"], "not a valid int"),
        (["run", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "--attention", "flash"], "unknown --attention 'flash'; use auto, eager, sdpa"),
        (["sweep", "--connectors", "mlp,nope"], "unknown connector 'nope'"),
        (
            ["run", "--stage", "lora", "--llm-steps", "2", "--connector-tasks", "chartqa"],
            "--connector-tasks chartqa is not among the training tasks",
        ),
        (["leaderboard", "--output", "does-not-exist"], "no leaderboard at"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert needle in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def test_unwritable_output_is_a_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = cli("run", *SMALL, "--output", str(blocker / "sub"), cwd=tmp_path)
    assert res.returncode == 2
    assert "not writable" in res.stderr and "--output" in res.stderr


def test_run_writes_run_dir_and_appends_leaderboard(tmp_path):
    out = tmp_path / "out"
    res = cli("run", "--connector", "mlp", "--task", "docvqa", *SMALL, "--output", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "AlignBench results" in res.stdout and "trainable" in res.stdout
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 1 and board.connector[0] == "mlp" and board.n[0] == 6
    run_dir = out / "runs" / board.run_id[0]
    config = json.loads((run_dir / "config.json").read_text())
    result = json.loads((run_dir / "results.json").read_text())
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert config["connector"] == "mlp" and config["train"]["steps"] == 3
    assert {"score", "stderr", "n", "wall_seconds", "versions", "commit", "blind"} <= set(result)
    assert len(preds) == 6 and {"prediction", "answers", "score"} <= set(preds[0])
    assert result["score"] == pytest.approx(sum(p["score"] for p in preds) / 6)

    # a failing run (bad option) leaves the leaderboard byte-for-byte intact
    before = (out / "leaderboard.csv").read_bytes()
    assert cli("run", "--connector", "nope", "--output", str(out), cwd=tmp_path).returncode == 2
    assert (out / "leaderboard.csv").read_bytes() == before

    # a second identical run gets its own directory and a second row
    assert (
        cli("run", "--connector", "mlp", "--task", "docvqa", *SMALL, "--output", str(out), cwd=tmp_path).returncode == 0
    )
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 2 and board.run_id.nunique() == 2
    shown = cli("leaderboard", "--output", str(out), cwd=tmp_path)
    assert shown.returncode == 0 and board.run_id[0] in shown.stdout


def test_config_dump_rebuilds_the_run(tmp_path):
    from alignbench.config.run import RunConfig

    out = tmp_path / "out"
    assert (
        cli(
            "run",
            "--connector",
            "perceiver",
            "--task",
            "chartqa",
            *SMALL,
            "--connector-arg",
            "num_latents=16",
            "--output",
            str(out),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    run_dir = next((out / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["connector_config"] == {
        "num_latents": 16,
        "depth": 2,
        "heads": 4,
        "ff_mult": 4,
        "latents_init_std": 0.02,
        "norm_gain_init": 1.0,
    }
    assert config["connector_tokens"] == 16
    rebuilt = RunConfig.from_dict(config)
    assert rebuilt.connector_args == {"num_latents": 16} and rebuilt.data.train_docs == 6
    result = json.loads((run_dir / "results.json").read_text())
    assert set(result["per_split"]) <= {"human_test", "augmented_test"} and result["per_split"]


def test_sweep_writes_the_comparison_table(tmp_path):
    out = tmp_path / "sweep"
    res = cli(
        "sweep", "--connectors", "mlp,align", "--tasks", "docvqa,chartqa", *SMALL, "--output", str(out), cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(out / "table.csv")
    assert list(table.connector) == ["mlp", "align"]
    assert {"docvqa", "chartqa", "avg", "docvqa_stderr", "docvqa_blind"} <= set(table.columns)
    md = (out / "table.md").read_text()
    assert " ".join(md.splitlines()[0].split()) == "| connector | docvqa (anls) | chartqa (relaxed_accuracy) | avg |"
    assert "blind (mlp, shuffled pages)" in md
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 4
    # each connector trained once, on both tasks' training splits, and was scored on each task
    assert set(board.train_tasks) == {"docvqa+chartqa"}
    first = board[board.task == "docvqa"].set_index("connector").run_id
    later = board[board.task == "chartqa"].set_index("connector").trained_in
    assert later.to_dict() == first.to_dict() and board[board.task == "docvqa"].trained_in.isna().all()
    assert len(list((out / "trained").glob("*.json"))) == 2


def test_sweep_can_train_each_pair_on_its_own_task(tmp_path):
    out = tmp_path / "each"
    res = cli(
        "sweep",
        "--connectors",
        "mlp",
        "--tasks",
        "docvqa,chartqa",
        "--train-tasks",
        "each",
        *SMALL,
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.train_tasks) == ["docvqa", "chartqa"] and board.trained_in.isna().all()


def test_parallel_sweep_matches_serial_sweep(tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    args = ["sweep", "--connectors", "mlp,ovis", "--tasks", "infovqa", *SMALL]
    assert cli(*args, "--output", str(serial), cwd=tmp_path).returncode == 0
    res = cli(*args, "--jobs", "2", "--output", str(parallel), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    a, b = pd.read_csv(serial / "table.csv"), pd.read_csv(parallel / "table.csv")
    assert list(a.connector) == list(b.connector) == ["mlp", "ovis"]
    # same batches, same seeds; thread counts differ (2 vs 1), so allow one of the 6 answers to flip
    assert (a.infovqa - b.infovqa).abs().max() <= 100 / 6 + 1e-6
    assert len(pd.read_csv(parallel / "leaderboard.csv")) == 2


def test_tune_scores_on_the_validation_split(tmp_path):
    out = tmp_path / "tune"
    res = cli(
        "tune",
        "--connectors",
        "mlp,align",
        "--lrs",
        "1e-3,1e-2",
        "--task",
        "chartqa",
        *SMALL,
        "--connector-arg",
        "align.ln2_lr_mult=10",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out / "lr_search.csv")
    assert len(df) == 4 and set(df.lr) == {1e-3, 1e-2}
    assert set(df[df.connector == "align"].options) == {"ln2_lr_mult=10"}
    run = next(p for p in (out / "runs").iterdir() if "align" in p.name)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["eval_split"] == "val" and config["connector_config"]["ln2_lr_mult"] == 10.0
    bad = cli("tune", "--connector-arg", "ln2_lr_mult=10", "--output", str(out), cwd=tmp_path)
    assert bad.returncode == 2 and "CONNECTOR.OPTION=VALUE" in bad.stderr


def test_a_second_search_into_the_same_folder_keeps_the_first_ones_connectors(tmp_path):
    """Searching some connectors into a folder that holds another search keeps the other connectors' trials
    (their rows, and so the --tuned choice a sweep reads); a table that cannot be kept stops before any training."""
    out = tmp_path / "tune"
    first = cli("tune", "--connectors", "mlp", "--lrs", "1e-2", "--task", "chartqa", *SMALL, "--output", str(out))
    assert first.returncode == 0, first.stderr
    before = pd.read_csv(out / "lr_search.csv", keep_default_na=False)
    second = cli("tune", "--connectors", "ovis", "--lrs", "1e-3", "--task", "chartqa", *SMALL, "--output", str(out))
    assert second.returncode == 0, second.stderr
    after = pd.read_csv(out / "lr_search.csv", keep_default_na=False)
    assert list(after.connector) == ["mlp", "ovis"]
    assert after[after.connector == "mlp"].iloc[0].to_dict() == before.iloc[0].to_dict()  # kept as it was
    md = (out / "lr_search.md").read_text()
    assert "--connectors mlp" in md and "--connectors ovis" in md and "| ovis" in md and "| mlp" in md
    (out / "lr_search.csv").write_text("not,a\nsearch,table\n")
    runs = sorted((out / "runs").iterdir())
    bad = cli("tune", "--connectors", "align", "--lrs", "1e-3", "--task", "chartqa", *SMALL, "--output", str(out))
    assert bad.returncode == 2 and "is not a search table" in bad.stderr and "Traceback" not in bad.stderr
    assert sorted((out / "runs").iterdir()) == runs  # refused before any training
    assert (out / "lr_search.csv").read_text() == "not,a\nsearch,table\n"


def test_tune_reuses_a_sweeps_training_of_the_same_setting(tmp_path):
    study, search = tmp_path / "study", tmp_path / "search"
    res = cli(
        "sweep",
        "--connectors",
        "mlp",
        "--tasks",
        "chartqa",
        "--lr",
        "1e-3",
        *SMALL,
        "--output",
        str(study),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    res = cli(
        "tune",
        "--connectors",
        "mlp",
        "--lrs",
        "1e-3,1e-2",
        "--task",
        "chartqa",
        *SMALL,
        "--output",
        str(search),
        "--reuse-from",
        str(study),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    trials = {json.loads((p / "config.json").read_text())["train"]["lr"]: p for p in (search / "runs").iterdir()}
    result = {lr: json.loads((p / "results.json").read_text()) for lr, p in trials.items()}
    (trained,) = (study / "runs").iterdir()
    assert result[1e-3]["trained_in"] == str(trained) and result[1e-2].get("trained_in") is None
    assert (trials[1e-3] / "connector.safetensors").read_bytes() == (trained / "connector.safetensors").read_bytes()
    bad = cli(
        "tune", "--connectors", "mlp", "--reuse-from", str(tmp_path / "nowhere"), "--output", str(search), cwd=tmp_path
    )
    assert bad.returncode == 2 and "--reuse-from" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("train_tasks", [None, ["docvqa", "infovqa", "chartqa"]])
def test_default_budget_is_the_same_whatever_the_training_tasks(train_tasks):
    from alignbench.cli.options import parse
    from alignbench.config.train import TrainConfig
    from alignbench.run.sweep import run_config

    args = ["--train-tasks", ",".join(train_tasks)] if train_tasks else []
    cfg = run_config(parse(app, ["run", *args]).run)
    assert cfg.train.steps == TrainConfig().steps == 750 and cfg.train_tasks == (train_tasks or ["docvqa"])
