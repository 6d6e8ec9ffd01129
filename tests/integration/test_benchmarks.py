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
