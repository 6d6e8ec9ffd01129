"""Training curves: every run directory keeps its loss and learning-rate curve; `--report-to tensorboard`
streams the same rows through accelerate's tracker; a resumed or re-used training keeps the whole curve."""

import dataclasses
import json

import pandas as pd
import pytest

from alignbench.config.train import TrainConfig
from alignbench.connector import build_connector
from alignbench.model.vlm import VLM
from alignbench.task import TASKS
from alignbench.train.loop import TrainSource, train
from alignbench.train.schedule import warmup_cosine as lr_factor
from tests.support.cli import cli, flags

QUIET = {"log": lambda *a, **k: None}
SMALL = flags(train_docs=8, eval_questions=6, batch_size=4)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_run_keeps_its_curve_and_streams_it_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = cli(
        "run",
        "--connector",
        "pixelshuffle",
        "--task",
        "docvqa",
        "--steps",
        5,
        *SMALL,
        "--output",
        tmp_path,
        "--report-to",
        "tensorboard",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = next((tmp_path / "runs").iterdir())
    curve = pd.read_csv(run_dir / "train_curve.csv")
    assert curve.step.tolist() == [1, 2, 3, 4, 5] and set(curve.task) == {"docvqa"}
    result = json.loads((run_dir / "results.json").read_text())
    assert curve.loss.iloc[0] == pytest.approx(result["first_loss"], abs=1e-4)
    config = json.loads((run_dir / "config.json").read_text())
    train_cfg = config["train"]
    expected = [train_cfg["lr"] * lr_factor(k, train_cfg["steps"], train_cfg["warmup_steps"]) for k in range(5)]
    assert curve.lr.tolist() == pytest.approx(expected, rel=1e-5)  # the schedule the optimizer actually used
    assert curve.llm_lr.isna().all() and curve.seconds.is_monotonic_increasing
    assert train_cfg["report_to"] == "tensorboard"
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    logged = [e.value for e in events.Scalars("loss")]
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4, 5]
    assert logged == pytest.approx(curve.loss.tolist(), rel=1e-5)
    assert [e.value for e in events.Scalars("lr")] == pytest.approx(curve.lr.tolist(), rel=1e-5)


def test_a_run_that_re_uses_weights_holds_the_curve_that_trained_them(tmp_path):
    res = cli(
        "sweep",
        "--connectors",
        "hreducer",
        "--tasks",
        "docvqa,chartqa",
        "--steps",
        3,
        *SMALL,
        "--output",
        tmp_path,
        "--limit",
        4,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted((tmp_path / "runs").iterdir())
    curves = [(r / "train_curve.csv").read_text() for r in runs]
    assert len(runs) == 2 and curves[0] == curves[1]
    assert pd.read_csv(runs[0] / "train_curve.csv").task.tolist() == ["docvqa", "chartqa", "docvqa"]  # the mixture


def test_an_unknown_tracker_is_one_line(tmp_path):
    res = cli("run", "--connector", "mlp", "--steps", 1, *SMALL, "--output", tmp_path, "--report-to", "comet")
    assert res.returncode == 2 and "--report-to 'comet' is not one of none, tensorboard, wandb" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "runs").exists()


def test_the_tracker_does_not_change_the_training_key():
    a, b = TrainConfig(), TrainConfig(report_to="tensorboard")
    assert a.key_fields() == b.key_fields()


def test_a_resumed_training_returns_the_whole_curve(ws, tmp_path):
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    cfg = TrainConfig(steps=4, batch_size=2, warmup_steps=1, lr=3e-3)

    def fresh():
        return VLM(ws.backbone, build_connector("cabstractor", ws.backbone.connector_context(), {}, 1234))

    first = train(
        fresh(), [TrainSource(task, split, feats)], cfg, 0, checkpoint_dir=tmp_path, checkpoint_every=2, **QUIET
    )
    # the run directory now holds the checkpoint after step 4: a second call resumes there and trains no step
    again = train(
        fresh(),
        [TrainSource(task, split, feats)],
        dataclasses.replace(cfg),
        0,
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
        **QUIET,
    )
    assert again["resumed_from_step"] == 4
    assert [r["step"] for r in again["curve"]] == [1, 2, 3, 4]
    assert [r["loss"] for r in again["curve"]] == [r["loss"] for r in first["curve"]]
