"""Two runs with the same seed give identical predictions, scores and weights (docs/reliability.md); on the same
two runs: no network call with HF_HUB_OFFLINE=1, and a finished run reloads without pickle."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignbench.config.data import DataConfig
from alignbench.config.run import RunConfig
from alignbench.config.train import TrainConfig
from alignbench.model.checkpoint import load_trained
from alignbench.run.leaderboard import read_leaderboard
from alignbench.run.pipeline import run
from alignbench.run.workspace import Workspace
from tests.support.cli import cli_env
from tests.support.runs import assert_same_results, block_unpickling

QUIET = dict(log=lambda *a, **k: None)
DATA = DataConfig(train_docs=4, eval_questions=6)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    """Two runs with the same settings, each in a fresh workspace, with a frozen clock and run-id suffix
    (so their directories would collide by name) and every socket connection refused and recorded."""
    out = tmp_path_factory.mktemp("twins")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network access in a test")

    cfg = RunConfig(connector="perceiver", task="chartqa", data=DATA, train=TrainConfig(steps=3, batch_size=2))
    with pytest.MonkeyPatch.context() as m:
        m.setenv("HF_HUB_OFFLINE", "1")
        for name in ("connect", "connect_ex"):
            m.setattr(socket.socket, name, refuse)
        m.setattr(socket, "create_connection", refuse)
        m.setattr(socket, "getaddrinfo", refuse)
        m.setattr("alignbench.run.outputs.time.strftime", lambda *a: "20260101-000000")
        m.setattr("alignbench.run.outputs.secrets.token_hex", lambda n: "beef")
        results = [run(cfg, out, Workspace(cfg.backbone, cfg.data, "cpu", **QUIET), **QUIET) for _ in range(2)]
    return out, [Path(r["run_dir"]) for r in results], attempts


def test_same_seed_gives_identical_predictions_scores_and_weights(twin_runs):
    out, (a, b), _ = twin_runs
    assert a != b and b.name == a.name + "-2"  # same settings and second: two directories all the same
    assert_same_results(a, b)
    wa, wb = load_file(str(a / "connector.safetensors")), load_file(str(b / "connector.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit
    assert sorted(read_leaderboard(out / "leaderboard.csv").run_id) == sorted([a.name, b.name])


OFFLINE_PROBE = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args))
    raise OSError("network access in a test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from alignbench.cli import main
try:
    main()
finally:
    print("ATTEMPTS", attempts, file=sys.stderr)
"""


def test_hub_offline_makes_no_network_call(twin_runs, tmp_path):
    assert twin_runs[2] == []  # two complete embedded runs in this process: not one connection attempted
    # A hub id with HF_HUB_OFFLINE=1 set when the process starts, as a user runs it: the hub cache is
    # consulted, the network never (every socket connection is refused and recorded).
    env = cli_env({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")})
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            OFFLINE_PROBE,
            "run",
            "--backbone",
            "hf",
            "--vision",
            "some-org/some-vision-model",
            "--llm",
            "some-org/some-llm",
            "--output",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert "cannot load vision tower 'some-org/some-vision-model'" in res.stderr
    assert "ATTEMPTS []" in res.stderr


def test_finished_run_reloads_without_pickle(twin_runs, ws, monkeypatch):
    _, (a, _), _ = twin_runs
    block_unpickling(monkeypatch)
    model, config = load_trained(a, ws.backbone)
    assert config["connector"] == "perceiver"
    saved = load_file(str(a / "connector.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.connector.state_dict().items())
