"""Embedded sets: the real schemas, determinism, disjoint splits, glyph pages; parametrised over tasks."""

import pytest

from alignbench.config.data import DataConfig
from alignbench.data.batches import batches
from alignbench.data.embedded.dataset import embedded_dataset
from alignbench.data.embedded.generators import sample_docs
from alignbench.data.embedded.page import PageSpec, cell_labels, render
from alignbench.data.splits import to_split
from alignbench.errors import AlignBenchError
from alignbench.task import TASKS

CFG = DataConfig(train_docs=12, eval_questions=10)


@pytest.mark.parametrize("task", TASKS.names())
def test_real_schema_and_answer_types(task, tmp_path):
    ds = embedded_dataset(task, "eval", CFG, PageSpec(), tmp_path)
    assert ds.column_names == list(TASKS.get(task).embedded.columns)
    row = ds[0]
    spec = TASKS.get(task)
    if task == "chartqa":
        assert isinstance(row["answer"], str)
        assert set(ds["type"]) <= {"human_test", "augmented_test"}
    else:
        assert isinstance(row["answers"], list) and row["answers"]
    assert row["image"].size == PageSpec().size
    assert spec.answers(row)


@pytest.mark.parametrize("task", TASKS.names())
def test_deterministic_and_splits_disjoint(task, tmp_path):
    a = embedded_dataset(task, "train", CFG, PageSpec(), tmp_path / "a")
    b = embedded_dataset(task, "train", CFG, PageSpec(), tmp_path / "b")
    assert a["question"] == b["question"]
    assert (
        a.cast_column("image", a.features["image"].__class__(decode=False))["image"]
        == b.cast_column("image", b.features["image"].__class__(decode=False))["image"]
    )
    ev = to_split(embedded_dataset(task, "eval", CFG, PageSpec(), tmp_path / "a"), TASKS.get(task))
    tr = to_split(a, TASKS.get(task))
    assert not {im.tobytes() for im in ev.images} & {im.tobytes() for im in tr.images}
    other_seed = embedded_dataset(
        task, "train", DataConfig(train_docs=12, eval_questions=10, seed=1), PageSpec(), tmp_path / "a"
    )
    assert other_seed["question"] != a["question"] or other_seed[0]["image"] != a[0]["image"]


@pytest.mark.parametrize("task", TASKS.names())
def test_pages_are_glyph_aligned(task):
    spec = PageSpec()
    for doc in sample_docs(task, 5, 3, spec):
        labels = cell_labels(doc.page)
        assert len(labels) == spec.num_cells
        assert len(doc.page.text()) == spec.num_cells
        image = render(doc.page)
        assert image.size == spec.size
        for qa in doc.qas:
            assert qa.answers and all(a.strip() for a in qa.answers)


def test_extractive_answers_are_on_the_page():
    for doc in sample_docs("docvqa", 20, 0):
        for qa in doc.qas:
            assert any(a in doc.page.text() for a in qa.answers), (qa, doc.page.lines())


def test_images_deduplicated(tmp_path):
    ds = embedded_dataset("docvqa", "train", CFG, PageSpec(), tmp_path)
    split = to_split(ds, TASKS.get("docvqa"))
    assert len(split.images) == CFG.train_docs < len(split.samples)


def test_missing_column_is_one_clear_message(tmp_path):
    ds = embedded_dataset("docvqa", "eval", CFG, PageSpec(), tmp_path).rename_column("answers", "gold")
    with pytest.raises(AlignBenchError, match=r"lacks column\(s\) \['answers'\]"):
        to_split(ds, TASKS.get("docvqa"))


def test_batches_same_for_everyone_and_cover_epochs():
    a = list(batches(10, 4, 5, seed=0))
    assert a == list(batches(10, 4, 5, seed=0))
    assert a != list(batches(10, 4, 5, seed=1))
    flat = [i for b in a for i in b]
    assert sorted(flat[:10]) == list(range(10))  # first epoch is a permutation


def test_no_top_level_connectors_or_tasks_package(tmp_path):
    """Installed, the built-ins live under `alignbench.`; the generic names stay free (checked outside the repo)."""
    import subprocess
    import sys

    code = (
        "import importlib.util as u; print(u.find_spec('connectors'), u.find_spec('tasks'), "
        "u.find_spec('alignbench.connectors') is not None, u.find_spec('alignbench.tasks') is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert out == ["None", "None", "True", "True"]


def test_a_task_without_an_embedded_set_is_one_message_on_embedded_data(monkeypatch, tmp_path):
    """A plug-in task that defines no embedded set, on the default `--data embedded`: one clear message, from the
    configuration's check and from the loader alike (never a KeyError)."""
    import dataclasses

    from alignbench.config.run import RunConfig
    from alignbench.data.splits import load_split

    TASKS.names()
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))  # the plug-in task is forgotten afterwards
    monkeypatch.setattr(TASKS, "_providers", dict(TASKS._providers))
    TASKS.add("plugvqa", dataclasses.replace(TASKS.get("docvqa"), embedded=None))
    message = "task 'plugvqa' has no embedded set"
    with pytest.raises(AlignBenchError, match=message):
        RunConfig(connector="mlp", task="plugvqa").validate()
    with pytest.raises(AlignBenchError, match=message):
        load_split(TASKS.get("plugvqa"), "eval", CFG, PageSpec(), tmp_path)
    RunConfig(connector="mlp", task="plugvqa", data=dataclasses.replace(RunConfig().data, source="hf")).validate()
