"""lmms-eval both ways, with no network: a checkpoint as an lmms-eval model (its entry point and its CLI, on a tiny
local task in lmms-eval's YAML format through --include_path), and `alignbench eval --via lmms-eval` (lmms-eval's
simple_evaluate in this process) agreeing with AlignBench's own evaluation.

These tests need the extra (`pip install -e ".[lmms-eval]"`). Without it they are skipped, except where
ALIGNBENCH_REQUIRE_LMMS_EVAL=1 is set (CI sets it): there a missing lmms-eval is a failure, never a skip.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest

from alignbench.connector import CONNECTORS
from alignbench.metrics import anls
from tests.support import REPO
from tests.support.cli import cli, flags, main_in_process, one_line
from tests.support.extras import require_lmms_eval
from tests.support.hf import real_schema_rows

# Connectors the project's own sweep trained on the embedded backbone (results/embedded): they answer, so the
# two evaluators are compared on real predictions, not on empty ones.
CHECKPOINTS = {
    task: next((REPO / "results" / "embedded" / "runs").glob(f"{task}-mlp-s0-*")) for task in ("docvqa", "chartqa")
}


@pytest.fixture
def lmms():
    require_lmms_eval()
    import lmms_eval

    return lmms_eval


@pytest.fixture(scope="module")
def local_docvqa(tmp_path_factory):
    """The embedded DocVQA evaluation pages (the checkpoint's own) in lmms-lab/DocVQA's schema, saved locally."""
    root = tmp_path_factory.mktemp("lmms")
    datasets.DatasetDict({"validation": real_schema_rows("docvqa", "eval", 300)}).save_to_disk(str(root / "data"))
    return root


def local_task(root: Path, lmms_eval, name: str = "docvqa_val_local") -> Path:
    """A tiny task in lmms-eval's YAML format: lmms-eval's docvqa_val definition over the local copy."""
    definition = Path(lmms_eval.__file__).parent / "tasks" / "docvqa" / "docvqa_val.yaml"
    folder = root / "tasks"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"include: {definition}\ntask: {name}\ndataset_path: {root / 'data'}\n"
        "dataset_name: null\ndataset_kwargs:\n  load_from_disk: true\n"
    )
    return folder


def test_the_checkpoint_model_is_registered_through_lmms_evals_entry_point_group(lmms):
    from importlib import metadata

    from lmms_eval.models import get_model

    from alignbench.lmms.model import AlignBenchLMMS

    entry = [ep for ep in metadata.entry_points(group="lmms_eval.models") if ep.name == "alignbench"]
    assert [ep.value for ep in entry] == ["alignbench.lmms:manifest"]
    assert get_model("alignbench") is AlignBenchLMMS


def test_lmms_eval_cli_scores_a_checkpoint_on_a_local_task(lmms, local_docvqa, tmp_path):
    """`lmms-eval --model alignbench --model_args checkpoint=RUN_DIR --tasks ... --include_path ...`, unedited."""
    tasks = local_task(local_docvqa, lmms)
    lmms_cli = Path(sys.executable).with_name("lmms-eval")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run(
        [
            str(lmms_cli),
            "--model",
            "alignbench",
            "--model_args",
            f"checkpoint={CHECKPOINTS['docvqa']}",
            "--tasks",
            "docvqa_val_local",
            "--include_path",
            str(tasks),
            "--limit",
            "12",
            "--batch_size",
            "12",
            "--output_path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("*results*.json")).read_text())
    score = results["results"]["docvqa_val_local"]["anls,none"]
    assert results["n-samples"]["docvqa_val_local"]["effective"] == 12 and score > 0.5  # the checkpoint reads


def test_eval_via_lmms_eval_agrees_with_alignbench_on_the_same_checkpoint_and_data(
    lmms, local_docvqa, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    args = [
        "eval",
        "--checkpoint",
        CHECKPOINTS["docvqa"],
        "--data",
        local_docvqa / "data",
        "--limit",
        60,
        "--output",
        out,
        "--no-blind",
    ]
    for via in ("alignbench", "lmms-eval"):
        code, _, err = main_in_process(monkeypatch, capsys, *args, "--via", via)
        assert code in (0, None), err
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.evaluator) == ["alignbench", "lmms-eval"]
    assert set(board.checkpoint) == {CHECKPOINTS["docvqa"].name} and set(board.n) == {60}
    ours, theirs = (json.loads((out / "runs" / r / "results.json").read_text()) for r in board.run_id)
    assert abs(ours["score"] - theirs["score"]) <= 0.01, (ours["score"], theirs["score"])
    assert ours["score"] > 0.5  # a checkpoint that answers
    records = {r: [json.loads(x) for x in (out / "runs" / r / "predictions.jsonl").open()] for r in board.run_id}
    a, b = records.values()
    assert [x["uid"] for x in a] == [x["uid"] for x in b]
    assert [x["prediction"] for x in a] == [x["prediction"] for x in b]  # same pages, prompts and decoding
    for ours_q, theirs_q in zip(a, b):  # where a question is scored differently, it is the stated difference:
        if ours_q["score"] != theirs_q["score"]:  # lmms-eval keeps NL = 0.5 as 0.5, the anls package as 0
            assert (ours_q["score"], theirs_q["score"]) == (0.0, 0.5)
    assert theirs["lmms_eval"]["task"] == "docvqa_val" and theirs["metric"] == "anls"
    assert theirs["alignbench_metric_on_these_predictions"]["score"] == pytest.approx(ours["score"])
    assert ours["eval_dtype"] == theirs["eval_dtype"] == "float32"  # both record the precision they scored in


def test_chartqa_via_lmms_eval_reports_its_splits(lmms, tmp_path, monkeypatch, capsys):
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "eval",
        "--checkpoint",
        CHECKPOINTS["chartqa"],
        "--via",
        "lmms-eval",
        "--limit",
        20,
        "--output",
        tmp_path,
    )
    assert code in (0, None), err
    row = pd.read_csv(tmp_path / "leaderboard.csv").iloc[-1]
    assert row.metric == "relaxed_overall" and row.evaluator == "lmms-eval" and row.n == 20
    assert set(json.loads(row.per_split)) <= {"relaxed_human_split", "relaxed_augmented_split"}


def test_an_unknown_lmms_eval_task_is_one_line(lmms, tmp_path, monkeypatch, capsys):
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "eval",
        "--checkpoint",
        CHECKPOINTS["docvqa"],
        "--via",
        "lmms-eval",
        "--lmms-task",
        "docvqa_nope",
        "--limit",
        2,
        "--output",
        tmp_path,
    )
    assert code == 2 and "lmms-eval has no task 'docvqa_nope'" in one_line(err)


@pytest.mark.parametrize(
    "pred,gold,lmms_eval_score,anls_score",
    [
        ("abcd", "abcx", 0.75, 0.75),  # one edit in four characters: both definitions agree
        ("ab", "ax", 0.5, 0.0),  # NL is exactly 0.5: lmms-eval keeps 0.5, the anls package drops it
        ("ax", "ab   ", 0.8, 0.0),  # lmms-eval divides by the raw length (5), anls by the normalised one (2)
    ],
)
def test_the_two_anls_definitions_differ_only_where_stated(lmms, pred, gold, lmms_eval_score, anls_score):
    from lmms_eval.api.metrics import anls as lmms_eval_anls

    assert lmms_eval_anls([gold], [pred])["anls"] == pytest.approx(lmms_eval_score)
    assert anls(pred, [gold]) == pytest.approx(anls_score)


def test_without_the_extra_the_message_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # as if not installed
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "eval",
        "--checkpoint",
        CHECKPOINTS["docvqa"],
        "--via",
        "lmms-eval",
        "--limit",
        2,
        "--output",
        tmp_path,
    )
    assert code == 2 and 'pip install -e ".[lmms-eval]"' in one_line(err)


@pytest.fixture(scope="module")
def every_connector(tmp_path_factory):
    """Every registered connector trained briefly on the same pages (one sweep), each in its own run directory."""
    out = tmp_path_factory.mktemp("zoo")
    res = cli(
        *("sweep", "--connectors", "all", "--tasks", "docvqa"),
        *flags(steps=2, batch_size=4, train_docs=8, eval_questions=300, limit=4),
        "--output",
        out,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.parametrize("connector", CONNECTORS.names())
def test_every_connector_reads_the_same_through_lmms_eval(
    lmms, local_docvqa, every_connector, connector, tmp_path, monkeypatch, capsys
):
    """The same trained connector, the same 8 pages: lmms-eval's task and loop give AlignBench's predictions."""
    run = next((every_connector / "runs").glob(f"docvqa-{connector}-*"))
    out = tmp_path / "out"
    for via in ("alignbench", "lmms-eval"):
        code, _, err = main_in_process(
            monkeypatch,
            capsys,
            "eval",
            "--checkpoint",
            run,
            "--data",
            local_docvqa / "data",
            "--limit",
            8,
            "--output",
            out,
            "--no-blind",
            "--via",
            via,
        )
        assert code in (0, None), err
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.evaluator) == ["alignbench", "lmms-eval"] and set(board.connector) == {connector}
    a, b = ([json.loads(x) for x in (out / "runs" / r / "predictions.jsonl").open()] for r in board.run_id)
    assert [x["uid"] for x in a] == [x["uid"] for x in b] and len(a) == 8
    assert [x["prediction"] for x in a] == [x["prediction"] for x in b]
