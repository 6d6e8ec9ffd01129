"""A killed or crashed run resumes to the same result (docs/reliability.md): training killed with SIGKILL at a
random step and resumed with --resume gives the same weights and scores; a crash in process resumes without pickle
(stages full and lora); evaluation killed (and crashed) mid-way generates only the missing batches; a resume refuses
another configuration."""

import copy
import dataclasses
import json
import os
import random
import signal
import subprocess
import time

import pytest
import torch

from alignbench.config.data import DataConfig
from alignbench.config.eval import EvalConfig
from alignbench.config.run import RunConfig
from alignbench.config.train import TrainConfig
from alignbench.connector import ConnectorContext, build_connector
from alignbench.errors import AlignBenchError
from alignbench.evaluate import evaluate
from alignbench.model.checkpoint import latest_checkpoint, training_backbone
from alignbench.model.lora import adapters
from alignbench.model.vlm import VLM
from alignbench.run.leaderboard import read_leaderboard
from alignbench.run.pipeline import run
from alignbench.task import TASKS
from alignbench.train.loop import TrainSource, train
from tests.support.cli import cli, cli_start, flags, main_in_process, one_line
from tests.support.runs import assert_same_results, assert_same_weights, block_unpickling, only_run_dir

QUIET = dict(log=lambda *a, **k: None)
DATA = DataConfig(train_docs=4, eval_questions=6)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_training_killed_at_a_random_step_resumes_to_the_same_weights_and_scores(tmp_path):
    steps = 20
    kill_after = random.randint(1, steps - 8)  # a different step on every run of the suite
    small = flags(steps=steps, batch_size=2, train_docs=4, eval_questions=6, eval_batch_size=3)
    common = ["run", "--connector", "ovis", "--task", "docvqa", *small]
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
        block_unpickling(m)
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


def test_evaluation_killed_resumes_with_only_the_missing_predictions(tmp_path):
    small = flags(steps=2, batch_size=2, train_docs=4, eval_questions=16, eval_batch_size=1)
    common = ["run", "--connector", "ovis", "--task", "docvqa", *small]
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
