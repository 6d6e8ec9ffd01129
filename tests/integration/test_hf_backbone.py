"""The same `run` path serves any Hugging Face vision tower + causal LM saved locally (no network)."""

import json

import pytest

from tests.support.cli import cli, flags


@pytest.mark.parametrize("connector", ["mlp", "align"])
def test_run_with_locally_saved_hf_models(hf_pair, connector, tmp_path):
    vision, llm = hf_pair("large")
    out = tmp_path / "out"
    res = cli(
        "run",
        *("--backbone", "hf", "--vision", vision, "--llm", llm, "--connector", connector, "--task", "infovqa"),
        *flags(steps=2, batch_size=2, train_docs=3, eval_questions=3),
        "--output",
        out,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr
    run_dir = next((out / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dims"] == {"vision_dim": 32, "llm_dim": 48, "num_patches": 36}  # derived, not declared
    assert json.loads((run_dir / "results.json").read_text())["n"] == 3


def test_missing_local_model_is_a_message(tmp_path):
    res = cli(
        "run",
        *("--backbone", "hf", "--vision", tmp_path / "nope", "--llm", tmp_path / "nope2"),
        "--output",
        tmp_path / "o",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 2
    assert "cannot load vision tower" in res.stderr and "Traceback" not in res.stderr
