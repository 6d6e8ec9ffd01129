"""The same `run` path serves any Hugging Face vision tower + causal LM saved locally (no network)."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    from alignbench.backbones.tiny import make_tokenizer

    root = tmp_path_factory.mktemp("hf")
    vision = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=96,
            patch_size=16,
        )
    )
    vision.save_pretrained(root / "vision")
    SiglipImageProcessor(size={"height": 96, "width": 96}).save_pretrained(root / "vision")
    tok = make_tokenizer()
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return root


@pytest.mark.parametrize("connector", ["mlp", "align"])
def test_run_with_locally_saved_hf_models(saved_pair, connector, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignbench",
            "run",
            "--backbone",
            "hf",
            "--vision",
            str(saved_pair / "vision"),
            "--llm",
            str(saved_pair / "llm"),
            "--connector",
            connector,
            "--task",
            "infovqa",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--train-docs",
            "3",
            "--eval-questions",
            "3",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr
    run_dir = next((out / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dims"] == {"vision_dim": 32, "llm_dim": 48, "num_patches": 36}  # derived, not declared
    assert json.loads((run_dir / "results.json").read_text())["n"] == 3


def test_missing_local_model_is_a_message(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignbench",
            "run",
            "--backbone",
            "hf",
            "--vision",
            str(tmp_path / "nope"),
            "--llm",
            str(tmp_path / "nope2"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 2
    assert "cannot load vision tower" in res.stderr and "Traceback" not in res.stderr
