"""The GPU benchmark's code runs (tiny preset on the CPU), and says why it does nothing without CUDA."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_train_mfu_smoke_runs_the_training_step_on_the_cpu():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_mfu.py"), "--smoke"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert '"tokens_per_s"' in res.stdout and "nothing written" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="only without CUDA")
def test_train_mfu_without_cuda_says_so_and_writes_nothing(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_mfu.py")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and "skipped, CUDA is not available" in res.stdout
