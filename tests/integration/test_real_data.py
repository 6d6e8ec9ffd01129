"""Real datasets (`--data hf`, a dataset id, a local copy): the task definitions of the embedded sets over another
source, a seeded `--limit`, ChartQA's train schema, the hub cache offline, and clear messages when data is missing."""

import json
import socket

import datasets
import pandas as pd
import pytest
import torch

from alignbench.backbones.base import LazyFeatures
from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.data.real import load_source, parse_source, resolve_source
from alignbench.data.splits import subset, to_split
from alignbench.errors import AlignBenchError
from alignbench.task import TASKS
from tests.support.cli import cli, flags, main_in_process, one_line
from tests.support.hf import cache_hub_dataset, m4_chartqa, real_schema_rows

SMALL = flags(steps=2, batch_size=2, eval_batch_size=8)


@pytest.fixture(scope="module")
def docvqa_copy(tmp_path_factory):
    """A local copy of a DocVQA-schema dataset with train and validation splits (save_to_disk)."""
    path = tmp_path_factory.mktemp("data") / "docvqa"
    datasets.DatasetDict(
        {"train": real_schema_rows("docvqa", "train", 6), "validation": real_schema_rows("docvqa", "eval", 12)}
    ).save_to_disk(str(path))
    return path


def uids(run_dir):
    return [json.loads(line)["uid"] for line in (run_dir / "predictions.jsonl").open()]


# ---------------------------------------------------------------- local copies


@pytest.mark.parametrize("form", ["save_to_disk", "parquet", "repository"])
def test_a_local_copy_in_any_usual_form_is_read_with_the_tasks_definition(form, docvqa_copy, tmp_path):
    task = TASKS.get("docvqa")
    validation = datasets.load_from_disk(str(docvqa_copy))["validation"]
    if form == "save_to_disk":
        spec = str(docvqa_copy)
    elif form == "parquet":
        spec = str(tmp_path / "validation.parquet")
        validation.to_parquet(spec)
    else:  # a hub repository downloaded as files (huggingface-cli download --local-dir): README configs + parquet
        (tmp_path / "repo" / "DocVQA").mkdir(parents=True)
        validation.to_parquet(str(tmp_path / "repo" / "DocVQA" / "validation-00000-of-00001.parquet"))
        (tmp_path / "repo" / "README.md").write_text(
            "---\nconfigs:\n- config_name: DocVQA\n  data_files:\n  - split: "
            "validation\n    path: DocVQA/validation-*\n---\n"
        )
        spec = f"{tmp_path / 'repo'}:DocVQA"
    source = resolve_source(task, "eval", DataConfig(source=spec))
    split = to_split(load_source(source, task), task, source=source.describe(), lazy_images=True)
    assert len(split.samples) == 12 and [s.uid for s in split.samples] == list(validation["questionId"])
    assert split.samples[0].answers == validation[0]["answers"] and split.answers_are_lists
    assert split.images[split.samples[0].image].size == validation[0]["image"].size  # decoded when asked for


def test_run_on_a_local_copy_evaluates_a_seeded_subset(docvqa_copy, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    for connector in ("mlp", "ovis"):
        code, _, err = main_in_process(
            monkeypatch,
            capsys,
            "run",
            "--connector",
            connector,
            "--data",
            docvqa_copy,
            "--limit",
            5,
            *SMALL,
            "--output",
            out,
        )
        assert code in (0, None), err
    board = pd.read_csv(out / "leaderboard.csv")
    first, second = (uids(out / "runs" / r) for r in board.run_id)
    all_ids = datasets.load_from_disk(str(docvqa_copy))["validation"]["questionId"]
    picked = [all_ids[i] for i in subset(12, 5, 0)]
    assert sorted(first) == sorted(second) == sorted(picked) and len(set(first)) == 5  # the same for every connector
    assert subset(12, 5, 0) == sorted(subset(12, 5, 0)) and subset(12, 5, 0) != subset(12, 5, 1)
    config = json.loads((out / "runs" / board.run_id[0] / "config.json").read_text())
    assert config["data"]["source"] == str(docvqa_copy) and config["data"]["eval_limit"] == 5


def test_a_single_split_copy_is_never_trained_on(tmp_path, monkeypatch, capsys):
    real_schema_rows("docvqa", "eval", 4).to_parquet(str(tmp_path / "val.parquet"))
    code, _, err = main_in_process(
        monkeypatch, capsys, "run", "--data", tmp_path / "val.parquet", "--output", tmp_path / "out"
    )
    assert (
        code == 2
        and "holds a single split, so training would use the evaluation rows; pass --train-data" in one_line(err)
    )


def test_chartqa_trains_on_huggingfacem4_schema(tmp_path, monkeypatch, capsys):
    """HuggingFaceM4/ChartQA's train split (query, label list, human_or_machine) read as the chartqa task."""
    task = TASKS.get("chartqa")
    m4 = m4_chartqa(real_schema_rows("chartqa", "train", 4))
    split = to_split(m4, task, source="m4", lazy_images=True)
    assert split.samples[0].question == m4[0]["query"] and split.samples[0].answers == m4[0]["label"]
    assert {s.split for s in split.samples} <= {"human", "machine"}  # class labels by name
    m4.save_to_disk(str(tmp_path / "m4-train"))
    real_schema_rows("chartqa", "eval", 6).to_parquet(str(tmp_path / "test.parquet"))
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--task",
        "chartqa",
        "--connector",
        "mlp",
        "--data",
        tmp_path / "test.parquet",
        "--train-data",
        tmp_path / "m4-train",
        *SMALL,
        "--output",
        tmp_path / "out",
    )
    assert code in (0, None), err
    result = json.loads(next((tmp_path / "out" / "runs").iterdir()).joinpath("results.json").read_text())
    assert result["n"] == 6 and set(result["per_split"]) <= {"human_test", "augmented_test"}


def test_features_computed_per_batch_equal_the_precomputed_ones(docvqa_copy, tiny_backbone):
    from alignbench.run.workspace import Workspace

    cfg = DataConfig(source=str(docvqa_copy))
    kept, lazy = (Workspace(BackboneConfig(), cfg, "cpu", log=lambda *a: None) for _ in range(2))
    kept._backbone = lazy._backbone = tiny_backbone
    lazy.precompute_bytes = 0
    task = TASKS.get("docvqa")
    (_, a), (_, b) = kept.split(task, "eval"), lazy.split(task, "eval")
    assert isinstance(a, torch.Tensor) and isinstance(b, LazyFeatures)
    torch.testing.assert_close(b[[3, 0, 3]], a[[3, 0, 3]])


def test_a_page_that_does_not_decode_is_skipped_and_counted(tmp_path):
    rows = real_schema_rows("docvqa", "eval", 5).cast_column("image", datasets.Image(decode=False)).to_list()
    rows[2]["image"] = {"bytes": b"not an image", "path": None}
    ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image(decode=False))
    split = to_split(ds, TASKS.get("docvqa"), lazy_images=True)
    assert len(split.samples) == 4 and split.skip_counts() == {"unreadable image": 1}


def test_source_specs():
    assert (
        parse_source("lmms-lab/DocVQA:InfographicVQA@test", "validation").path,
        parse_source("lmms-lab/DocVQA:InfographicVQA@test", "validation").config,
        parse_source("lmms-lab/DocVQA:InfographicVQA@test", "validation").split,
    ) == ("lmms-lab/DocVQA", "InfographicVQA", "test")
    source = resolve_source(TASKS.get("infovqa"), "eval", DataConfig(source="hf"))
    assert (source.path, source.config, source.split) == ("lmms-lab/DocVQA", "InfographicVQA", "validation")
    train = resolve_source(TASKS.get("chartqa"), "train", DataConfig(source="hf"))
    assert (train.path, train.split) == ("HuggingFaceM4/ChartQA", "train")


# ---------------------------------------------------------------- the hub cache, offline


@pytest.mark.parametrize("task", ["docvqa", "chartqa"])
def test_data_hf_runs_offline_from_the_hub_cache(task, tmp_path):
    """`--data hf` with HF_HUB_OFFLINE=1 and the task's datasets already downloaded: the run works."""
    home = tmp_path / "hf-home"
    definition = TASKS.get(task)
    evaluation = real_schema_rows(task, "eval", 6)
    train = real_schema_rows(task, "train", 4)
    cache_hub_dataset(home, definition.hf_path, definition.hf_config, {definition.eval_split: evaluation}, tmp_path)
    if task == "chartqa":
        train = m4_chartqa(train)
    cache_hub_dataset(home, definition.train_source.path, definition.train_source.config, {"train": train}, tmp_path)
    res = cli(
        *("run", "--task", task, "--connector", "mlp", "--data", "hf", "--limit", 4, *SMALL),
        "--output",
        tmp_path / "out",
        env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr
    run_dir = next((tmp_path / "out" / "runs").iterdir())
    assert json.loads((run_dir / "results.json").read_text())["n"] == 4
    assert set(uids(run_dir)) <= set(evaluation["questionId"] if task == "docvqa" else map(str, range(6)))


def test_a_missing_dataset_offline_names_the_id_and_how_to_use_a_local_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    code, _, err = main_in_process(monkeypatch, capsys, "run", "--data", "hf", "--output", tmp_path / "out")
    msg = one_line(err)
    assert code == 2
    assert (
        "cannot load dataset 'HuggingFaceM4/DocumentVQA': it is not in the local Hugging Face cache and the hub "
        "is unreachable (HF_HUB_OFFLINE=1 is set)"
    ) in msg
    assert "pass --data / --train-data with a local copy" in msg
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


def test_an_unreachable_hub_is_not_waited_for(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    task = TASKS.get("docvqa")
    with pytest.raises(
        AlignBenchError,
        match=rf"cannot load dataset 'lmms-lab/DocVQA': it is not in the local "
        rf"Hugging Face cache and the hub is unreachable \(cannot connect to "
        rf"127.0.0.1:{port}",
    ):
        load_source(task.eval_source, task)


def test_a_missing_local_path_is_named(tmp_path, monkeypatch, capsys):
    code, _, err = main_in_process(
        monkeypatch, capsys, "run", "--data", tmp_path / "nope", "--output", tmp_path / "out"
    )
    assert code == 2 and f"dataset '{tmp_path / 'nope'}' not found" in one_line(err)
