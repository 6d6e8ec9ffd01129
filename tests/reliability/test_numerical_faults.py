"""A diverged run is never a result (docs/reliability.md): a NaN or infinite loss stops training naming the step,
keeps the last good checkpoint and writes no leaderboard row; the leaderboard refuses a score that is not finite."""

import json

import pytest
from safetensors.torch import load_file

from alignbench.errors import AlignBenchError
from alignbench.model.checkpoint import latest_checkpoint
from alignbench.model.vlm import VLM
from alignbench.run.leaderboard import append_leaderboard
from tests.support.cli import flags, main_in_process, one_line
from tests.support.runs import only_run_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
        *("run", "--connector", "ovis", *flags(steps=8, batch_size=2, train_docs=4, eval_questions=4)),
        *("--checkpoint-every", 2),
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
