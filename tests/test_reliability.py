"""Fault injection for runs. Every guarantee of docs/reliability.md is checked by causing the fault:

1. training killed with SIGKILL at a random step, resumed with --resume: same weights and scores;
2. evaluation killed (and crashed) mid-way: resumes generating only the missing batches, same results;
3. eight processes appending to one leaderboard at once (and writers killed mid-append); same-name run dirs;
5. a NaN / Inf loss: stops naming the step, keeps the last good checkpoint, writes no leaderboard row;
6. two runs with the same seed: identical predictions, scores and weights;
7. no pickle anywhere, trust_remote_code off unless asked, plug-ins only when named, names cannot leave
   the output directory, no network call with HF_HUB_OFFLINE=1.
(4, bad data, is in test_bad_data.py.)
"""

import copy
import dataclasses
import json
import multiprocessing as mp
import os
import pickle
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_workers as workers  # light module: what the spawned processes import
import torch
from safetensors.torch import load_file

from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.config.eval import EvalConfig
from alignbench.config.run import RunConfig
from alignbench.config.train import TrainConfig
from alignbench.connector import CONNECTORS, ConnectorContext, build_connector
from alignbench.errors import AlignBenchError
from alignbench.evaluate import evaluate
from alignbench.model.checkpoint import latest_checkpoint, load_trained, training_backbone
from alignbench.model.lora import adapters
from alignbench.model.vlm import VLM
from alignbench.run.leaderboard import append_leaderboard, read_leaderboard
from alignbench.run.outputs import new_run_dir, run_path
from alignbench.run.pipeline import run
from alignbench.run.workspace import Workspace
from alignbench.task import TASKS, Task
from alignbench.train.loop import TrainSource, train

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *a, **k: None)
DATA = DataConfig(train_docs=4, eval_questions=6)


def _cli_env() -> dict:
    # One thread per process: the tests start several at once on a small machine, and tiny matrices gain
    # nothing from threads that wait on each other. Every compared run uses the same thread count.
    return {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignbench", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=_cli_env(),
    )


def cli_start(*args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alignbench", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_cli_env(),
    )


def main_in_process(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The console entry point in this process (so a test can monkeypatch it): exit code, stdout, stderr."""
    from alignbench import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["alignbench", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()  # only what this command prints
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def one_line(text: str) -> str:
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    return text.strip()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300):
    """Poll `predicate` every few milliseconds until it returns a true value; fail if `proc` ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before the kill point\n{out}\n{err}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("kill point never reached")


def only_run_dir(output: Path) -> Path:
    dirs = list((output / "runs").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max().item() <= 1e-6, key


SCORE_KEYS = ("metric", "score", "stderr", "n", "per_split", "blind", "n_skipped", "first_loss", "final_loss")


def assert_same_results(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert {k: ra.get(k) for k in SCORE_KEYS} == {k: rb.get(k) for k in SCORE_KEYS}
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()


@pytest.fixture(scope="module")
def ws():
    return Workspace(BackboneConfig(), DATA, "cpu", **QUIET)


# ---------------------------------------------------------------- 1. resumable training


def test_training_killed_at_a_random_step_resumes_to_the_same_weights_and_scores(tmp_path):
    steps = 20
    kill_after = random.randint(1, steps - 8)  # a different step on every run of the suite
    common = [
        "run",
        "--connector",
        "ovis",
        "--task",
        "docvqa",
        "--steps",
        steps,
        "--batch-size",
        2,
        "--train-docs",
        4,
        "--eval-questions",
        6,
        "--eval-batch-size",
        3,
    ]
    ref = cli_start(*common, "--checkpoint-every", 0, "--output", tmp_path / "ref", cwd=tmp_path)
    victim = cli_start(*common, "--checkpoint-every", 1, "--output", tmp_path / "victim", cwd=tmp_path)

    def checkpoint_step():
        for pointer in (tmp_path / "victim").glob("runs/*/checkpoints/latest.json"):
            try:
                step = json.loads(pointer.read_text())["step"]
            except (OSError, ValueError):
                return None
            return step if step >= kill_after else None

    wait_for(checkpoint_step, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    run_dir = only_run_dir(tmp_path / "victim")
    killed_at = latest_checkpoint(run_dir)[0]
    assert kill_after <= killed_at < steps, (kill_after, killed_at)
    assert not (run_dir / "results.json").exists() and not (tmp_path / "victim" / "leaderboard.csv").exists()

    resumed = cli("run", "--resume", run_dir, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint after step {killed_at} of {steps}" in " ".join(resumed.stdout.split())
    assert ref.wait(timeout=600) == 0, ref.communicate()[1]
    ref_dir = only_run_dir(tmp_path / "ref")
    assert_same_weights(ref_dir / "connector.safetensors", run_dir / "connector.safetensors")
    assert_same_results(ref_dir, run_dir)
    assert json.loads((run_dir / "results.json").read_text())["resumed_from_step"] == killed_at
    board = read_leaderboard(tmp_path / "victim" / "leaderboard.csv")
    assert list(board.run_id) == [run_dir.name]
    assert board.score[0] == read_leaderboard(tmp_path / "ref" / "leaderboard.csv").score[0]
    assert not (run_dir / "checkpoints").exists()  # a finished run keeps its final weights only


def _blocked(*args, **kwargs):
    raise AssertionError("pickle/torch.load used to read a checkpoint")


@pytest.mark.parametrize("stage", ["full", "lora"])
def test_in_process_crash_and_resume_without_pickle(ws, tmp_path, monkeypatch, stage):
    """A crash (an exception at step 4 of 4) after the checkpoint of step 2; the resumed training reads only
    safetensors and JSON (pickle and torch.load are blocked) and ends with the uninterrupted weights,
    the LLM's included in stage `full` (tied embeddings), the LoRA adapters in stage `lora` (whose LLM stage,
    the last 3 steps, began before the checkpoint)."""
    connector = "ovis"  # the stage `connector` is resumed by the subprocess test above
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    cfg = TrainConfig(
        stage=stage, steps=4, batch_size=2, lr=3e-3, warmup_steps=2, llm_steps=3 if stage == "lora" else None
    )

    def fresh():
        backbone = ws.backbone
        if stage == "full":
            backbone = dataclasses.replace(backbone, llm=copy.deepcopy(backbone.llm))
        else:
            backbone = training_backbone(backbone, dataclasses.asdict(cfg))
        ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
        return VLM(backbone, build_connector(connector, ctx, {}, 1234))

    ref = fresh()
    train(ref, [TrainSource(task, split, feats)], cfg, 0, **QUIET)

    crashing = fresh()
    calls = {"n": 0}
    real_loss = VLM.loss

    def loss_then_crash(self, *a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected crash")
        return real_loss(self, *a)

    with monkeypatch.context() as m:
        m.setattr(VLM, "loss", loss_then_crash)
        with pytest.raises(RuntimeError, match="injected crash"):
            train(
                crashing,
                [TrainSource(task, split, feats)],
                cfg,
                0,
                checkpoint_dir=tmp_path,
                checkpoint_every=2,
                **QUIET,
            )
    assert latest_checkpoint(tmp_path)[0] == 2

    resumed = fresh()
    with monkeypatch.context() as m:
        for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
            m.setattr(target, name, _blocked)
        stats = train(
            resumed, [TrainSource(task, split, feats)], cfg, 0, checkpoint_dir=tmp_path, checkpoint_every=2, **QUIET
        )
    assert stats["resumed_from_step"] == 2
    for (name, a), b in zip(ref.connector.state_dict().items(), resumed.connector.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    for (name, a), b in zip(ref.llm.state_dict().items(), resumed.llm.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    if stage == "lora":  # the adapters trained (B starts at zero) and were restored from the checkpoint
        b_matrices = [m.weight for name, m in adapters(resumed.llm).items() if name.endswith("__B")]
        assert b_matrices and all(w.abs().max() > 0 for w in b_matrices)
    assert resumed.llm.get_input_embeddings().weight is resumed.llm.get_output_embeddings().weight


def test_resume_refuses_a_changed_configuration_and_explicit_options(ws, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    cfg = RunConfig(connector="ovis", data=DATA, train=TrainConfig(steps=2, batch_size=2), eval=EvalConfig(blind=False))
    with monkeypatch.context() as m:  # stop the run right after its directory and first checkpoint exist
        m.setattr("alignbench.run.pipeline.evaluate", _raise_interrupt)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, out, ws, checkpoint_every=1, **QUIET)
    run_dir = only_run_dir(out)
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=3))
    with pytest.raises(AlignBenchError, match="another configuration"):
        run(changed, out, ws, resume=run_dir, **QUIET)
    code, _, err = main_in_process(monkeypatch, capsys, "run", "--resume", run_dir, "--steps", "3")
    assert code == 2 and "drop --steps" in one_line(err)
    code, _, err = main_in_process(monkeypatch, capsys, "run", "--resume", tmp_path / "nowhere")
    assert code == 2 and "not a run directory" in one_line(err)


def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


# ---------------------------------------------------------------- 2. resumable evaluation


def test_evaluation_killed_resumes_with_only_the_missing_predictions(tmp_path):
    common = [
        "run",
        "--connector",
        "ovis",
        "--task",
        "docvqa",
        "--steps",
        2,
        "--batch-size",
        2,
        "--train-docs",
        4,
        "--eval-questions",
        16,
        "--eval-batch-size",
        1,
    ]
    ref = cli_start(*common, "--output", tmp_path / "ref", cwd=tmp_path)
    victim = cli_start(*common, "--output", tmp_path / "victim", cwd=tmp_path)
    target = random.randint(2, 20)  # of 32 predictions (16 questions, 16 blind)

    def journal_lines():
        for journal in (tmp_path / "victim").glob("runs/*/predictions.partial.jsonl"):
            n = len(journal.read_text().splitlines()) - 1  # the first line is the fingerprint
            return n if n >= target else None

    wait_for(journal_lines, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    run_dir = only_run_dir(tmp_path / "victim")
    assert not (run_dir / "results.json").exists()
    kept = 0  # whole lines; a line cut by the kill is not reused
    for line in (run_dir / "predictions.partial.jsonl").read_text().splitlines()[1:]:
        try:
            json.loads(line)
            kept += 1
        except ValueError:
            break

    resumed = cli("run", "--resume", run_dir, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint after step 2 of 2" in " ".join(resumed.stdout.split())
    result = json.loads((run_dir / "results.json").read_text())
    assert result["predictions_from_journal"] == kept >= target - 1  # batches of 1: every whole line is reused
    assert ref.wait(timeout=600) == 0, ref.communicate()[1]
    assert_same_results(only_run_dir(tmp_path / "ref"), run_dir)
    assert not (run_dir / "predictions.partial.jsonl").exists()


def test_evaluation_crash_regenerates_only_missing_batches(ws, tmp_path, monkeypatch):
    task = TASKS.get("chartqa")
    split, feats = ws.split(task, "eval")
    backbone = ws.backbone
    ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
    model = VLM(backbone, build_connector("ovis", ctx, {}, 7))
    cfg = EvalConfig(batch_size=2)
    ref_result, ref_records = evaluate(model, task, split, feats, cfg)
    total = 2 * len(split.samples)  # predictions of the evaluation and of the blind baseline

    generated = []
    real_generate = model.generate

    def counting(features, prompts, max_new_tokens, pages=None, crash_after=None):
        if crash_after is not None and len(generated) == crash_after:
            raise RuntimeError("injected crash")
        generated.append(len(prompts))
        return real_generate(features, prompts, max_new_tokens, pages=pages)

    journal = tmp_path / "predictions.partial.jsonl"
    monkeypatch.setattr(model, "generate", lambda *a, **k: counting(*a, **k, crash_after=4))
    with pytest.raises(RuntimeError, match="injected crash"):
        evaluate(model, task, split, feats, cfg, journal=journal)
    done = sum(generated)
    assert done == 8 and len(journal.read_text().splitlines()) == 1 + done
    with open(journal, "a") as f:
        f.write('{"pass": "eval", "i": 0, "predic')  # a line cut short by a kill

    generated.clear()
    monkeypatch.setattr(model, "generate", lambda *a, **k: counting(*a, **k))
    result, records = evaluate(model, task, split, feats, cfg, journal=journal)
    assert sum(generated) == total - done and result["predictions_from_journal"] == done
    assert records == ref_records
    assert {k: result[k] for k in ("score", "stderr", "n", "blind", "per_split")} == {
        k: ref_result[k] for k in ("score", "stderr", "n", "blind", "per_split")
    }

    # other weights: the journal is not reused
    generated.clear()
    with torch.no_grad():
        next(model.connector.parameters()).add_(1.0)
    evaluate(model, task, split, feats, cfg, journal=journal)
    assert sum(generated) == total


# ---------------------------------------------------------------- 3. concurrent runs


def test_eight_processes_appending_at_once_lose_no_row_and_never_show_a_partial_file(tmp_path):
    ctx = mp.get_context("spawn")
    gate, stop, problems = ctx.Event(), ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=workers.append_rows, args=(str(tmp_path), w, 5, gate)) for w in range(8)]
    reader = ctx.Process(target=workers.read_continuously, args=(str(tmp_path), stop, problems))
    for p in [*writers, reader]:
        p.start()
    gate.set()  # all eight start appending at the same moment
    for p in writers:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    reader.join(30)
    assert problems.empty(), problems.get()
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert sorted(board.run_id) == sorted(f"w{w}-r{k}" for w in range(8) for k in range(5))
    assert json.loads(board.per_split[0]) == {"a": {"b": 1, "c": 2}}
    assert not list(tmp_path.glob(".leaderboard.csv.tmp*"))


def test_writers_killed_mid_append_leave_a_whole_leaderboard(tmp_path):
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    writers = [ctx.Process(target=workers.append_forever, args=(str(tmp_path), w, done)) for w in range(4)]
    for p in writers:
        p.start()
    deadline = time.time() + 60
    while done.qsize() < 20 and time.time() < deadline:
        time.sleep(0.01)
    for p in writers:
        time.sleep(random.uniform(0, 0.05))  # SIGKILL at arbitrary points of an append
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    reported = set()
    while not done.empty():
        reported.add(done.get())
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert len(reported) >= 20 and reported <= set(board.run_id)  # every completed append is there
    assert board.run_id.is_unique and board.score.notna().all()
    append_leaderboard(
        tmp_path, {"run_id": "after", "connector": "mlp", "task": "docvqa", "metric": "anls", "score": 1}
    )  # the lock died with its holders
    assert read_leaderboard(tmp_path / "leaderboard.csv").run_id.iloc[-1] == "after"


def test_same_settings_in_the_same_second_never_share_a_run_dir(tmp_path):
    ctx = mp.get_context("spawn")
    gate, result = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=workers.frozen_run_dir, args=(str(tmp_path), gate, result)) for _ in range(8)]
    for p in procs:
        p.start()
    gate.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = [result.get() for _ in procs]
    assert len(set(names)) == 8 and all(n.startswith("docvqa-mlp-s0-20260101-000000-beef") for n in names)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(names)


# ---------------------------------------------------------------- 6. determinism (+ 3. and 7. on the same runs)


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
    env = {**_cli_env(), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
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
    for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, name, _blocked)
    model, config = load_trained(a, ws.backbone)
    assert config["connector"] == "perceiver"
    saved = load_file(str(a / "connector.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.connector.state_dict().items())


# ---------------------------------------------------------------- 5. numerical faults


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(bad, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    append_leaderboard(out, {"run_id": "earlier", "connector": "mlp", "task": "docvqa", "metric": "anls", "score": 0.5})
    before = (out / "leaderboard.csv").read_bytes()
    calls = {"n": 0}
    real_loss = VLM.loss

    def loss_diverging_at_step_5(self, *a):
        calls["n"] += 1
        loss = real_loss(self, *a)
        return loss * bad if calls["n"] == 5 else loss

    monkeypatch.setattr(VLM, "loss", loss_diverging_at_step_5)
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--connector",
        "ovis",
        "--steps",
        8,
        "--batch-size",
        2,
        "--train-docs",
        4,
        "--eval-questions",
        4,
        "--checkpoint-every",
        2,
        "--output",
        out,
    )
    assert code == 2
    msg = one_line(err)
    assert f"loss is {bad} at step 5 of 8" in msg and "last good checkpoint (after step 4)" in msg
    assert (out / "leaderboard.csv").read_bytes() == before  # no row for a diverged run
    run_dir = only_run_dir(out)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "diverged"
    assert not (run_dir / "results.json").exists() and not (run_dir / "predictions.jsonl").exists()
    step, folder = latest_checkpoint(run_dir)
    assert step == 4 and all(t.isfinite().all() for t in load_file(str(folder / "connector.safetensors")).values())
    code, _, err = main_in_process(monkeypatch, capsys, "run", "--resume", run_dir)
    assert code == 2 and "stopped for good" in one_line(err)


def test_leaderboard_refuses_a_result_without_a_finite_score(tmp_path):
    from alignbench.run.leaderboard import leaderboard_row

    config = {
        "connector": "mlp",
        "task": "docvqa",
        "train": {"stage": "connector", "steps": 1, "lr": 1e-3, "init_seed": 1},
        "data": {"seed": 0},
    }
    for result in (
        {"metric": "anls", "score": float("nan"), "stderr": 0, "n": 0},
        {"metric": "anls", "score": 0.5, "stderr": 0, "n": 1, "status": "diverged"},
    ):
        with pytest.raises(AlignBenchError, match="not added to the leaderboard"):
            leaderboard_row(tmp_path, config, result)


# ---------------------------------------------------------------- 4. bad data through a whole run


def test_bad_rows_in_a_run_are_skipped_counted_and_reported(ws, tmp_path):
    """The evaluation source of a real run with injected faults: a corrupt image, an empty question, an empty
    answer list and an RGBA page. Three rows are skipped and counted (results.json, leaderboard, console);
    the RGBA page is scored; no skipped row is ever scored."""
    import datasets

    from alignbench.data import splits as data_module

    real = data_module.embedded_dataset
    faulty = []

    def with_faults(task, split, cfg, spec, cache, renderer=None):
        ds = real(task, split, cfg, spec, cache, renderer)
        if split != "eval":
            return ds
        rows = ds.cast_column("image", datasets.Image(decode=False)).to_list()
        faulty[:] = [r["questionId"] for r in rows[:3]]
        rows[0]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n garbage", "path": None}
        rows[1]["question"] = "   "
        rows[2]["answers"] = []
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.open(io.BytesIO(rows[3]["image"]["bytes"])).convert("RGBA").save(buf, "PNG")
        rows[3]["image"] = {"bytes": buf.getvalue(), "path": None}
        return datasets.Dataset.from_list(rows, features=ds.features)

    logs = []
    cfg = RunConfig(connector="ovis", data=DATA, train=TrainConfig(steps=1, batch_size=2))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(data_module, "embedded_dataset", with_faults)
        result = run(cfg, tmp_path, Workspace(cfg.backbone, cfg.data, "cpu", **QUIET), log=logs.append)
    run_dir = Path(result["run_dir"])
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["n"] == DATA.eval_questions - 3 and saved["n_skipped"] == 3
    assert saved["skipped"] == {"empty question": 1, "no gold answers": 1, "unreadable image": 1}
    scored = [json.loads(line)["uid"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(scored) == saved["n"] and len(faulty) == 3 and not set(faulty) & set(scored)
    assert any(
        "skipped 3 of 6 questions (1 empty question, 1 no gold answers, 1 unreadable image)" in str(x) for x in logs
    )
    assert read_leaderboard(tmp_path / "leaderboard.csv").n_skipped[0] == 3


def test_wrong_source_stops_the_cli_with_one_line(tmp_path, monkeypatch, capsys):
    from alignbench.data import splits as data_module

    real = data_module.embedded_dataset
    monkeypatch.setattr(data_module, "embedded_dataset", lambda *a: real(*a).rename_column("answers", "answer_list"))
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--connector",
        "ovis",
        "--steps",
        1,
        "--train-docs",
        4,
        "--eval-questions",
        4,
        "--output",
        tmp_path / "out",
    )
    assert code == 2
    assert "embedded docvqa/train set lacks column(s) ['answers']" in one_line(err)
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


# ---------------------------------------------------------------- 7. security


PICKLE_IMPORT = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|joblib)\b", re.M)


def test_package_never_unpickles():
    files = [p for d in ("alignbench", "connectors", "tasks") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        text = path.read_text()
        assert not PICKLE_IMPORT.search(text), f"{path} imports a pickle module"
        for call in re.finditer(r"torch\.load\(", text):
            end = text.find(")", call.end())
            assert "weights_only=True" in text[call.end() : end], f"{path}: torch.load without weights_only=True"
        assert "trust_remote_code=True" not in text, f"{path} turns trust_remote_code on by itself"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_trust_remote_code_is_off_unless_asked(command, tmp_path, monkeypatch, capsys):
    import transformers

    seen = []

    def fake_from_pretrained(ref, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("fake hub")

    for cls in ("AutoModel", "AutoImageProcessor", "AutoModelForCausalLM", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", fake_from_pretrained)
    base = [command, "--backbone", "hf", "--vision", "org/v", "--llm", "org/l", "--output", tmp_path]
    base += ["--connectors", "mlp", "--tasks", "docvqa"] if command == "sweep" else []
    for flag, expected in (([], False), (["--trust-remote-code"], True)):
        seen.clear()
        code, _, err = main_in_process(monkeypatch, capsys, *base, *flag)
        assert code == 2 and "cannot load vision tower 'org/v'" in one_line(err)
        assert seen == [expected]


PLUGIN = '''
from dataclasses import dataclass

from torch import nn

from alignbench.connector import CONNECTORS, Connector


@CONNECTORS.register("plugproj")
class PlugProj(Connector):
    """A linear projection, from a plug-in file."""

    @dataclass
    class Config:
        pass

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.proj = nn.Linear(ctx.vision_dim, ctx.llm_dim)

    def forward(self, features):  # [B, N, d] -> [B, N, D]
        return self.proj(features)
'''

PLUGIN_PACKAGE = {
    "__init__.py": "from . import definitions  # noqa: F401\n",
    "definitions.py": """
import dataclasses

from alignbench.task import TASKS

TASKS.add("docvqa_plug", dataclasses.replace(TASKS.get("docvqa"), description="from a plug-in package"))
""",
}


@pytest.fixture
def clean_registries(monkeypatch):
    """Plug-ins loaded by a test are forgotten afterwards."""
    from alignbench import plugins

    CONNECTORS.names(), TASKS.names()
    monkeypatch.setattr(CONNECTORS, "_items", dict(CONNECTORS._items))
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))
    monkeypatch.setattr(plugins, "_PLUGINS", {})


def _write_plugins(root: Path) -> tuple[Path, Path]:
    (root / "plugproj.py").write_text(PLUGIN)
    package = root / "plugpkg"
    package.mkdir()
    for name, text in PLUGIN_PACKAGE.items():
        (package / name).write_text(text)
    return root / "plugproj.py", package


def test_plugins_load_only_when_named(tmp_path, clean_registries, monkeypatch, capsys):
    from typer.testing import CliRunner

    from alignbench.cli import app

    plugin_file, package = _write_plugins(tmp_path)
    monkeypatch.chdir(tmp_path)
    # not named: not loaded, even from the working directory
    plain = cli("list", cwd=tmp_path)
    assert plain.returncode == 0 and "plugproj" not in plain.stdout and "docvqa_plug" not in plain.stdout
    code, out, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--plugin",
        plugin_file,
        "--connector",
        "plugproj",
        "--steps",
        1,
        "--batch-size",
        2,
        "--train-docs",
        4,
        "--eval-questions",
        4,
        "--output",
        tmp_path / "out",
    )
    assert code == 0, err
    board = read_leaderboard(tmp_path / "out" / "leaderboard.csv")
    assert list(board.connector) == ["plugproj"]
    config = json.loads((tmp_path / "out" / "runs" / board.run_id[0] / "config.json").read_text())
    assert config["plugins"] == [str(plugin_file.resolve())]
    # The CLI's console reads COLUMNS when alignbench.cli is first imported (by whichever test came first): give it
    # a wide one here, so the table is not elided whatever the test order.
    from rich.console import Console

    monkeypatch.setattr("alignbench.cli.common.console", Console(width=250))
    listed = CliRunner().invoke(app, ["list", "--plugin", str(plugin_file), "--plugin", str(package)])
    assert listed.exit_code == 0, listed.output
    assert "plugproj" in listed.output and "docvqa_plug" in listed.output and "from a plug-in package" in listed.output


@pytest.mark.parametrize(
    "body,needle",
    [
        (None, "not found; give a Python file"),
        ("raise ZeroDivisionError('boom')\n", "failed to import: ZeroDivisionError: boom"),
        (
            "from alignbench.connector import CONNECTORS\nfrom alignbench.connectors.mlp import MLPConnector\n"
            "CONNECTORS.register('mlp')(type('Other', (MLPConnector,), {}))\n",
            "'mlp' is registered twice",
        ),
    ],
)
def test_bad_plugin_is_one_line_exit_2(body, needle, tmp_path, clean_registries, monkeypatch, capsys):
    path = tmp_path / "bad_plugin.py"
    if body is not None:
        path.write_text(body)
    code, _, err = main_in_process(monkeypatch, capsys, "list", "--plugin", path)
    assert code == 2 and needle in one_line(err) and str(path) in err


def test_parallel_sweep_with_a_plugin_is_refused(tmp_path, clean_registries, monkeypatch, capsys):
    plugin_file, _ = _write_plugins(tmp_path)
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "sweep",
        "--plugin",
        plugin_file,
        "--connectors",
        "plugproj",
        "--tasks",
        "docvqa",
        "--jobs",
        2,
        "--output",
        tmp_path / "out",
    )
    assert code == 2 and "--jobs 1" in one_line(err)


def test_names_cannot_write_outside_the_output_directory(tmp_path, ws):
    out = tmp_path / "out"
    for task, connector in [
        ("../../evil", "mlp"),
        ("docvqa", "../evil"),
        ("docvqa", "a/b"),
        ("..", "mlp"),
        ("docvqa", ""),
        ("/abs", "mlp"),
    ]:
        with pytest.raises(AlignBenchError, match="invalid (task|connector) name"):
            new_run_dir(out, task, connector, 0)
    for run_id in ["../x", "..", "a/../../x", "/etc", "", "x/../../y"]:
        with pytest.raises(AlignBenchError, match="invalid run id"):
            run_path(out, run_id)
    assert run_path(out, "docvqa-mlp-s0-1") == out / "runs" / "docvqa-mlp-s0-1"
    with pytest.raises(AlignBenchError, match="invalid task name"):
        TASKS.add("../evil", Task("x", "p", None, "test", "q", "a", "", "anls", 4))
    with pytest.raises(AlignBenchError, match="invalid connector name"):
        CONNECTORS.register("../evil")(object)
    with pytest.raises(AlignBenchError, match="unknown task '../../evil'"):
        RunConfig(task="../../evil").validate()
    with pytest.raises(AlignBenchError, match="unknown split '../../evil'"):
        ws.split(TASKS.get("docvqa"), "../../evil")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("{}")
    with pytest.raises(AlignBenchError, match="not a run directory under"):
        run(RunConfig(data=DATA), out, ws, resume=elsewhere, **QUIET)
    assert not list(tmp_path.rglob("*evil*")) and sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]
