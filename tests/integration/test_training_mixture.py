"""Training on several tasks' training splits (a step from each in turn), and runs that share a training
configuration training once: the later runs re-use the weights and score exactly what retraining would."""

import dataclasses
import json
from pathlib import Path

import pytest

from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.config.run import RunConfig
from alignbench.config.train import TrainConfig
from alignbench.errors import AlignBenchError
from alignbench.run.pipeline import run
from alignbench.run.workspace import Workspace

QUIET = {"log": lambda *a, **k: None}
DATA = DataConfig(train_docs=6, eval_questions=6)
TRAIN = TrainConfig(steps=4, batch_size=2, warmup_steps=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ws():
    return Workspace(BackboneConfig(), DATA, "cpu", **QUIET)


def config(connector="mlp", task="docvqa", train_tasks=("docvqa", "chartqa"), **train):
    data = dataclasses.replace(DATA, train_tasks=list(train_tasks) if train_tasks else None)
    return RunConfig(connector=connector, task=task, data=data, train=dataclasses.replace(TRAIN, **train), device="cpu")


def test_steps_alternate_between_the_training_tasks(ws, tmp_path, monkeypatch):
    import alignbench.train.loop as train_module

    seen = []
    real = train_module.collate

    def spy(tokenizer, task, samples):
        seen.append(task.name)
        return real(tokenizer, task, samples)

    monkeypatch.setattr(train_module, "collate", spy)
    result = run(config(train_tasks=("docvqa", "infovqa", "chartqa")), tmp_path, ws, **QUIET)
    assert seen == ["docvqa", "infovqa", "chartqa", "docvqa"]  # step k takes task k mod 3
    assert result["train_tasks"] == ["docvqa", "infovqa", "chartqa"]
    saved = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert saved["train_tasks"] == ["docvqa", "infovqa", "chartqa"] and saved["data"]["train_tasks"] == seen[:3]


@pytest.mark.parametrize("stage", ["lora", "full"])
def test_the_connector_stage_draws_from_its_own_tasks(ws, tmp_path, monkeypatch, stage):
    import alignbench.train.loop as train_module

    seen = []
    real = train_module.collate
    monkeypatch.setattr(train_module, "collate", lambda tok, task, s: seen.append(task.name) or real(tok, task, s))
    result = run(
        config(
            train_tasks=("docvqa", "infovqa", "chartqa"),
            steps=7,
            stage=stage,
            llm_steps=3,
            connector_tasks=["chartqa", "infovqa"],
        ),
        tmp_path,
        ws,
        **QUIET,
    )
    # steps 1-4 (the connector stage) alternate over its tasks in the order given; steps 5-7 (the LLM stage) draw
    # from every training task in turn
    assert seen == ["chartqa", "infovqa", "chartqa", "infovqa", "docvqa", "infovqa", "chartqa"]
    run_dir = Path(result["run_dir"])
    curve = (run_dir / "train_curve.csv").read_text().splitlines()[1:]
    assert [line.split(",")[1] for line in curve] == seen  # what the run recorded is what it trained on
    assert json.loads((run_dir / "config.json").read_text())["train"]["connector_tasks"] == ["chartqa", "infovqa"]


def test_connector_stage_tasks_are_part_of_the_training_key(ws, tmp_path):
    mixed = config(train_tasks=("docvqa", "chartqa"), steps=4, stage="lora", llm_steps=2)
    own = dataclasses.replace(mixed, train=dataclasses.replace(mixed.train, connector_tasks=["chartqa"]))
    assert "connector_tasks" not in mixed.train.key_fields()  # runs without them keep the keys they had
    assert own.train.key_fields()["connector_tasks"] == ["chartqa"]
    first = run(mixed, tmp_path, ws, **QUIET)
    second = run(own, tmp_path, ws, **QUIET)
    assert "trained_in" not in second and weights(first) != weights(second)


@pytest.mark.parametrize(
    "connector_tasks,message",
    [
        (["infovqa"], "--connector-tasks infovqa is not among the training tasks"),
        ([], "--connector-tasks must name at least one training task"),
    ],
)
def test_bad_connector_stage_tasks_are_refused(connector_tasks, message):
    with pytest.raises(AlignBenchError, match=message):
        config(train_tasks=("docvqa", "chartqa"), stage="lora", llm_steps=2, connector_tasks=connector_tasks).validate()


def test_a_single_task_trains_on_its_own_split_as_before(ws, tmp_path, monkeypatch):
    import alignbench.train.loop as train_module

    seen = []
    real = train_module.collate
    monkeypatch.setattr(train_module, "collate", lambda tok, task, s: seen.append(task.name) or real(tok, task, s))
    result = run(config(task="chartqa", train_tasks=None), tmp_path, ws, **QUIET)
    assert set(seen) == {"chartqa"} and result["train_tasks"] == ["chartqa"]


@pytest.mark.parametrize("connector", ["mlp", "align"])
def test_a_shared_training_configuration_trains_once_and_scores_as_retraining(ws, tmp_path, connector):
    shared = tmp_path / "shared"
    first = run(config(connector, "docvqa"), shared, ws, **QUIET)
    second = run(config(connector, "chartqa"), shared, ws, **QUIET)  # same training, another evaluated task
    alone = run(config(connector, "chartqa"), tmp_path / "alone", ws, **QUIET)  # trains it again

    first_id = Path(first["run_dir"]).name
    assert "trained_in" not in first and second["trained_in"] == first_id and "trained_in" not in alone
    assert second["train_seconds"] == first["train_seconds"]  # the training it re-used, not a new one
    # the re-used weights are the trained ones, and they score exactly what training again scores
    assert weights(second) == weights(first) == weights(alone)
    assert predictions(second) == predictions(alone)
    assert second["score"] == alone["score"]
    board = (shared / "leaderboard.csv").read_text().splitlines()
    assert first_id in board[-1] and "docvqa+chartqa" in board[-1]


def test_weights_trained_in_another_output_are_reused_from_it(ws, tmp_path):
    study = run(config("mlp", "docvqa"), tmp_path / "study", ws, **QUIET)
    search = tmp_path / "search"  # e.g. a learning-rate search that re-uses the study's training of the same setting
    trial = run(config("mlp", "chartqa"), search, ws, **QUIET, reuse_from=[tmp_path / "study"])
    other = run(config("mlp", "chartqa", steps=5), search, ws, **QUIET, reuse_from=[tmp_path / "study"])
    assert trial["trained_in"] == str(tmp_path / "study" / "runs" / Path(study["run_dir"]).name)
    assert weights(trial) == weights(study) and trial["train_seconds"] == study["train_seconds"]
    curve = (Path(study["run_dir"]) / "train_curve.csv").read_text()
    assert (Path(trial["run_dir"]) / "train_curve.csv").read_text() == curve  # the curve of the weights it scores
    assert "trained_in" not in other  # another training setting trains, in its own output
    assert [p.name for p in (search / "trained").glob("*.json")] and not list(
        (tmp_path / "study" / "runs").glob("*chartqa*")
    )


def test_reuse_from_a_folder_without_a_training_index_is_refused(ws, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignBenchError, match="--reuse-from .*empty.*no trained/ index"):
        run(config("mlp", "docvqa"), tmp_path / "out", ws, **QUIET, reuse_from=[tmp_path / "empty"])
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


def weights(result) -> bytes:
    return (Path(result["run_dir"]) / "connector.safetensors").read_bytes()


def predictions(result) -> list[str]:
    lines = (Path(result["run_dir"]) / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in lines]


def test_another_training_setting_trains_again(ws, tmp_path):
    run(config("mlp", "docvqa"), tmp_path, ws, **QUIET)
    other = run(config("mlp", "chartqa", steps=5), tmp_path, ws, **QUIET)
    assert "trained_in" not in other
    entries = sorted(p.name for p in (tmp_path / "trained").glob("*.json"))
    assert len(entries) == 2


def test_weights_that_are_gone_are_trained_again(ws, tmp_path):
    first = run(config("mlp", "docvqa"), tmp_path, ws, **QUIET)
    (Path(first["run_dir"]) / "connector.safetensors").unlink()
    again = run(config("mlp", "chartqa"), tmp_path, ws, **QUIET)
    assert "trained_in" not in again


@pytest.mark.parametrize(
    "train_tasks,message",
    [
        (("docvqa", "docvqa"), "names a task twice"),
        (("docvqa", "tablevqa"), "unknown task 'tablevqa'"),
    ],
)
def test_bad_training_tasks_are_refused(train_tasks, message):
    with pytest.raises(AlignBenchError, match=message):
        config(train_tasks=train_tasks).validate()


def test_one_training_set_cannot_serve_several_tasks():
    cfg = config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_source="some/dataset"))
    with pytest.raises(AlignBenchError, match="--train-data names one training set"):
        cfg.validate()
