"""The GPU benchmark's code runs (tiny preset on the CPU), and says why it does nothing without CUDA."""

import json
import subprocess
import sys

import pytest
import torch

from tests.support import REPO
from tests.support.cli import cli, flags


def test_train_mfu_smoke_runs_the_training_step_on_the_cpu():
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_mfu.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert '"tokens_per_s"' in res.stdout and "nothing written" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="only without CUDA")
def test_train_mfu_without_cuda_says_so_and_writes_nothing(tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_mfu.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 0 and "skipped, CUDA is not available" in res.stdout


def test_cell_readout_reads_every_ink_cell_of_a_trained_run(tmp_path):
    """benchmarks/cell_readout.py on a trained tiny run: one row per run, its shares counted over the ink cells of
    the pages it read, and a connector with fewer tokens than cells listed without per-cell figures."""
    runs = []
    for connector in ("mlp", "perceiver"):
        small = flags(steps=2, batch_size=2, train_docs=4, eval_questions=5)
        res = cli("run", "--connector", connector, *small, "--output", tmp_path, "--no-blind")
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append(next(p for p in (tmp_path / "runs").iterdir() if p not in runs))
    out = tmp_path / "readout"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "cell_readout.py"),
            *map(str, runs),
            "--docs",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    mlp, perceiver = rows
    assert mlp["connector"] == "mlp" and mlp["tokens"] == mlp["patches"]
    assert 0 < mlp["ink_cells"] < 3 * mlp["patches"]
    for key in ("ink_nearest_is_cell_token", "blank_nearest_is_blank"):
        assert 0.0 <= mlp[key] <= 1.0
    assert perceiver["tokens"] < perceiver["patches"] and "ink_cells" not in perceiver
    table = out.with_suffix(".md").read_text()
    assert runs[0].name in table and "tokens for" in table


def _ceiling(path, seed: int, scores, question: str = "?"):
    """A trained ceiling file as benchmarks/text_ceiling.py writes it: one record per evaluation page."""
    questions = [
        {"page": i, "uid": f"eval-{i}-0", "question": question, "prediction": "a", "score": float(s)}
        for i, s in enumerate(scores)
    ]
    tasks = {t: {"metric": "anls", "text form": {"questions": questions}} for t in ("docvqa", "infovqa", "chartqa")}
    path.write_text(json.dumps({"seed": seed, "eval_dtype": "bfloat16", "trained": {"llm_steps": 3}, **tasks}))


@pytest.mark.parametrize("level,verdict", [(0.45, "met"), (0.2, "not met")])
def test_ceiling_share_pairs_each_question_with_the_ceiling_of_its_seed(tmp_path, level, verdict):
    """benchmarks/ceiling_share.py: share = the connector's total over the ceiling's on the same seeds and pages, and
    the bar's verdict from the paired difference connector - 0.7 x ceiling."""
    import numpy as np

    from tests.support.runs import write_runs

    rng = np.random.default_rng(0)
    n, pages = 120, np.arange(120)
    ceilings = {s: rng.uniform(0.4, 0.8, n).round(2) for s in (0, 1, 2)}
    runs = []
    for s in (0, 1, 2):
        _ceiling(tmp_path / f"ceil_s{s}.json", s, ceilings[s])
        mlp = np.clip(level + rng.normal(0, 0.05, n), 0, 1)
        runs.append({"connector": "mlp", "seed": s, "scores": mlp, "pages": pages})
    write_runs(tmp_path, runs)
    args = ["--runs", str(tmp_path), "--ceilings", str(tmp_path / "ceil_s*.json"), "--out", str(tmp_path / "share")]
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ceiling_share.py"), *args], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "share.json").read_text())["tasks"]["docvqa"]["connectors"]["mlp"]
    total = sum(r["scores"].sum() for r in runs)
    assert row["seeds"] == [0, 1, 2] and row["share"] == pytest.approx(
        total / sum(c.sum() for c in ceilings.values()), abs=1e-4
    )
    diffs = [(r["scores"] - 0.7 * ceilings[r["seed"]]).mean() for r in runs]
    assert row["bar_difference"]["estimate"] == pytest.approx(np.mean(diffs), abs=1e-4)
    assert row["bar"] == verdict and f"| {verdict} |" in (tmp_path / "share.md").read_text()
    # a ceiling that asked other questions is refused, naming both
    _ceiling(tmp_path / "ceil_s1.json", 1, ceilings[1], question="another question")
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ceiling_share.py"), *args], capture_output=True, text=True
    )
    assert res.returncode == 2 and "seed 1" in res.stderr and "Traceback" not in res.stderr


def test_train_step_time_times_each_stage_under_the_kernel_it_asked_for(tmp_path):
    """benchmarks/train_step_time.py on tiny: one row per (connector, kernel), each run recorded with the kernel it
    was asked for, each stage timed over its steps after the first."""
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_step_time.py"),
            *("--backbone", "tiny", "--connectors", "mlp", "--attention", "auto,eager", "--steps", "6"),
            *("--eval-questions", "3", "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "train_step_time_tiny.json").read_text())
    assert [(r["attention"], r["run_attention"]) for r in report["runs"]] == [("auto", "auto"), ("eager", "eager")]
    for row in report["runs"]:
        assert row["steps_timed"] == {"connector": 2, "lora": 2}
        assert row["connector_step_s"] > 0 and row["lora_step_s"] > 0 and row["eval_seconds"] > 0
    table = (tmp_path / "train_step_time_tiny.md").read_text()
    assert "| mlp | auto |" in table and "| mlp | eager |" in table
