"""Real backbones through the same `run` as the embedded one: presets, precision, prompt formats, pad tokens,
re-evaluating a checkpoint, and the hub never hanging (all with tiny models saved locally, no network)."""

import json
import os
import socket
import subprocess
import time

import pandas as pd
import pytest
import torch

from alignbench.backbones import load_backbone
from alignbench.backbones.hf import PRESETS
from alignbench.config.backbone import BackboneConfig
from alignbench.errors import AlignBenchError
from alignbench.prompt import prompt_format
from tests.support.cli import cli, command, flags, main_in_process, one_line
from tests.support.hf import cache_hub_model, make_tokenizer

SMALL = flags(steps=2, batch_size=2, train_docs=3, eval_questions=4, eval_batch_size=4)


@pytest.fixture(scope="module")
def pairs(hf_pair):
    return {kind: hf_pair(kind) for kind in ("plain", "chat", "full")}


def hf_args(pair):
    return ["--vision", pair[0], "--llm", pair[1]]  # as the issue writes it: --backbone hf is implied


# ---------------------------------------------------------------- one run path, two kinds of backbone


@pytest.mark.parametrize("backbone", ["tiny", "hf-plain", "hf-chat"])
def test_the_same_run_command_serves_the_embedded_and_a_saved_hf_backbone(
    backbone, pairs, tmp_path, monkeypatch, capsys
):
    from alignbench.run import pipeline as pipeline

    calls = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda cfg, *a, **k: calls.append(cfg.backbone.name) or real_run(cfg, *a, **k))
    args = [] if backbone == "tiny" else hf_args(pairs[backbone.split("-")[1]])
    code, out, err = main_in_process(
        monkeypatch, capsys, "run", "--connector", "mlp", "--task", "docvqa", *args, *SMALL, "--output", tmp_path
    )
    assert code in (0, None), err
    assert calls == [backbone.split("-")[0]]  # one pipeline.run, whatever the backbone
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    run_dir = tmp_path / "runs" / board.run_id[0]
    config = json.loads((run_dir / "config.json").read_text())
    result = json.loads((run_dir / "results.json").read_text())
    assert result["n"] == 4 and 0 <= result["score"] <= 1 and (run_dir / "connector.safetensors").is_file()
    if backbone == "tiny":
        assert config["dims"] == {"vision_dim": 128, "llm_dim": 128, "num_patches": 144}
    else:  # derived from the saved models, never declared: 32x32 pixels in 16x16 patches
        assert config["dims"] == {"vision_dim": 32, "llm_dim": 48, "num_patches": 4}
        assert config["backbone"]["dtype"] == "auto" and config["backbone"]["max_tiles"] == 1


def test_presets_name_the_papers_pairs_and_fill_what_is_not_given():
    assert set(PRESETS) == {"siglip-llama3.2-1b", "siglip-llama3.2-3b", "siglip-llama3.1-8b"}
    cfg = BackboneConfig("siglip-llama3.2-3b").resolved()
    assert (cfg.name, cfg.vision, cfg.llm) == (
        "hf",
        "google/siglip-so400m-patch14-384",
        "meta-llama/Llama-3.2-3B-Instruct",
    )
    local = BackboneConfig("siglip-llama3.1-8b", llm="/models/llama").resolved()
    assert local.llm == "/models/llama" and local.vision == "google/siglip-so400m-patch14-384"
    with pytest.raises(
        AlignBenchError,
        match="known backbones: hf, siglip-llama3.1-8b, siglip-llama3.2-1b, siglip-llama3.2-3b, smollm2, tiny",
    ):
        BackboneConfig("siglip-llama").validate()


def test_a_preset_runs_offline_from_the_hub_cache(pairs, tmp_path):
    """`--backbone siglip-llama3.2-1b` with the preset's hub ids already downloaded, HF_HUB_OFFLINE=1."""
    hf_home = tmp_path / "hf-home"
    vision_id, llm_id = PRESETS["siglip-llama3.2-1b"]
    cache_hub_model(hf_home, vision_id, pairs["full"][0])
    cache_hub_model(hf_home, llm_id, pairs["chat"][1])
    res = cli(
        "run",
        "--connector",
        "ovis",
        "--backbone",
        "siglip-llama3.2-1b",
        *SMALL,
        "--output",
        tmp_path / "out",
        env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr
    config = json.loads(next((tmp_path / "out" / "runs").iterdir()).joinpath("config.json").read_text())
    assert config["backbone"]["name"] == "siglip-llama3.2-1b"
    assert config["backbone_key"] == f"hf:{vision_id}|{llm_id}"


# ---------------------------------------------------------------- precision


def test_auto_precision_is_bfloat16_on_cuda_and_float32_on_the_cpu():
    from alignbench.backbones.base import torch_dtype

    assert torch_dtype(BackboneConfig(dtype="auto"), "cuda:0") == torch.bfloat16
    assert torch_dtype(BackboneConfig(dtype="auto"), "cpu") == torch.float32
    assert torch_dtype(BackboneConfig(dtype="float32"), "cuda") == torch.float32


def test_a_bfloat16_backbone_trains_and_evaluates(pairs, tmp_path, monkeypatch, capsys):
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--connector",
        "align",
        *hf_args(pairs["chat"]),
        "--dtype",
        "bfloat16",
        *SMALL,
        "--output",
        tmp_path,
    )
    assert code in (0, None), err
    run_dir = next((tmp_path / "runs").iterdir())
    result = json.loads((run_dir / "results.json").read_text())
    assert result["final_loss"] == result["final_loss"] and result["n"] == 4  # finite loss, scored
    backbone = load_backbone(BackboneConfig("hf", *map(str, pairs["chat"]), dtype="bfloat16"))
    assert next(backbone.llm.parameters()).dtype == torch.bfloat16 and backbone.vision_dtype == torch.bfloat16


def test_the_llm_trains_in_float32_when_its_backbone_is_bfloat16(pairs, tmp_path, monkeypatch, capsys):
    """bfloat16 weights would round away small updates: stage `full` trains a float32 copy."""
    from alignbench.train import loop as train_module

    seen = []
    real = train_module.train

    def spy(model, *a, **k):
        seen.append(next(model.llm.parameters()).dtype)
        return real(model, *a, **k)

    monkeypatch.setattr("alignbench.run.pipeline.train", spy)
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--connector",
        "mlp",
        *hf_args(pairs["plain"]),
        "--dtype",
        "bfloat16",
        "--stage",
        "full",
        *SMALL,
        "--output",
        tmp_path,
    )
    assert code in (0, None), err
    assert seen == [torch.float32]


# ---------------------------------------------------------------- prompt formats and padding


def test_a_chat_model_reads_the_image_inside_its_user_turn(pairs):
    from alignbench.connector import build_connector
    from alignbench.model.vlm import VLM

    backbone = load_backbone(BackboneConfig("hf", *map(str, pairs["chat"])))
    tok = backbone.tokenizer
    fmt = prompt_format(tok)
    assert tok.decode(fmt.prefix) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: "
        "26 Jul 2024<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    )
    ids = fmt.prompt_ids(tok, "What is the DATE?")
    assert tok.decode(ids) == "What is the DATE?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    # The merge puts [prefix][visual tokens][prompt]: the prompt starts after both.
    model = VLM(backbone, build_connector("mlp", backbone.connector_context()))
    feats = torch.randn(1, backbone.num_patches, backbone.vision_dim)
    embeds, mask, text_start = model.merge(feats, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    assert text_start == len(fmt.prefix) + backbone.num_patches and embeds.shape[1] == text_start + len(ids)
    prefix_embeds = backbone.llm.get_input_embeddings()(torch.tensor(fmt.prefix))
    assert torch.equal(embeds[0, : len(fmt.prefix)], prefix_embeds)


def test_a_plain_model_gets_its_bos_before_the_visual_tokens_and_the_embedded_one_nothing(pairs, tiny_backbone):
    backbone = load_backbone(BackboneConfig("hf", *map(str, pairs["full"])))  # tokenizer adds <s> first
    fmt = prompt_format(backbone.tokenizer)
    assert fmt.prefix == [backbone.tokenizer.convert_tokens_to_ids("<s>")]
    assert backbone.tokenizer.convert_tokens_to_ids("<s>") not in fmt.prompt_ids(backbone.tokenizer, "What is it?")
    assert prompt_format(tiny_backbone.tokenizer).prefix == []  # the embedded format is unchanged
    assert (
        load_backbone(BackboneConfig("hf", *map(str, pairs["chat"]), chat_template="none")).tokenizer.chat_template
        is None
    )


def test_a_tokenizer_without_pad_token_gets_a_reserved_one_or_eos(pairs):
    chat = load_backbone(BackboneConfig("hf", *map(str, pairs["chat"]))).tokenizer
    assert chat.pad_token == "<|finetune_right_pad_id|>"
    from alignbench.backbones.base import ensure_pad_token as _ensure_pad_token

    tok = make_tokenizer()
    tok.pad_token = None
    _ensure_pad_token(tok)
    assert tok.pad_token == "<pad>" or tok.pad_token == tok.eos_token


# ---------------------------------------------------------------- re-evaluating a checkpoint


@pytest.mark.parametrize("backbone", ["tiny", "hf-chat"])
def test_eval_checkpoint_rebuilds_the_model_from_the_run_directory_alone(
    backbone, pairs, tmp_path, monkeypatch, capsys
):
    args = [] if backbone == "tiny" else hf_args(pairs["chat"])
    out = tmp_path / "out"
    code, _, err = main_in_process(
        monkeypatch, capsys, "run", "--connector", "perceiver", "--stage", "full", *args, *SMALL, "--output", out
    )
    assert code in (0, None), err
    run_dir = next((out / "runs").iterdir())
    original = json.loads((run_dir / "results.json").read_text())
    code, stdout, err = main_in_process(monkeypatch, capsys, "eval", "--checkpoint", run_dir, "--eval-batch-size", 4)
    assert code in (0, None), err
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.evaluator) == ["alignbench", "alignbench"]
    assert pd.isna(board.checkpoint[0]) and board.checkpoint[1] == run_dir.name
    again = json.loads((out / "runs" / board.run_id[1] / "results.json").read_text())
    # The same weights (connector and the LLM it trained) on the same questions: the same score.
    assert again["score"] == pytest.approx(original["score"]) and again["n"] == original["n"]
    preds = [json.loads(x)["prediction"] for x in (out / "runs" / board.run_id[1] / "predictions.jsonl").open()]
    assert preds == [json.loads(x)["prediction"] for x in (run_dir / "predictions.jsonl").open()]
    # ... and on another task, with a seeded subset
    code, _, err = main_in_process(
        monkeypatch, capsys, "eval", "--checkpoint", run_dir, "--task", "chartqa", "--limit", 3, "--no-blind"
    )
    assert code in (0, None), err
    row = pd.read_csv(out / "leaderboard.csv").iloc[-1]
    assert row.task == "chartqa" and row.n == 3 and row.connector == "perceiver" and row.stage == "full"


def test_eval_of_something_that_is_not_a_run_is_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = main_in_process(monkeypatch, capsys, "eval", "--checkpoint", tmp_path)
    assert code == 2 and "is not a run directory (no config.json)" in one_line(err)
    (tmp_path / "config.json").write_text(
        json.dumps({"connector": "mlp", "task": "docvqa", "backbone": {}, "data": {}, "train": {}, "eval": {}})
    )
    code, _, err = main_in_process(monkeypatch, capsys, "eval", "--checkpoint", tmp_path, "--output", tmp_path / "o")
    assert code == 2 and "holds no trained weights" in one_line(err)


# ---------------------------------------------------------------- the hub, offline or unreachable


def test_a_missing_hub_model_offline_says_which_id_that_the_hub_is_unreachable_and_what_to_do(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    code, _, err = main_in_process(
        monkeypatch, capsys, "run", "--backbone", "siglip-llama3.2-1b", "--output", tmp_path / "out"
    )
    msg = one_line(err)
    assert code == 2
    assert "cannot load vision tower 'google/siglip-so400m-patch14-384'" in msg
    assert "not in the local Hugging Face cache and the hub is unreachable (HF_HUB_OFFLINE=1 is set)" in msg
    assert "pass a local folder (written by save_pretrained) to --vision" in msg


def test_a_missing_local_folder_is_named(tmp_path, monkeypatch, capsys):
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--backbone",
        "hf",
        "--vision",
        tmp_path / "nope",
        "--llm",
        tmp_path / "nope2",
        "--output",
        tmp_path / "out",
    )
    assert code == 2 and f"cannot load vision tower '{tmp_path / 'nope'}': no such folder" in one_line(err)


def test_an_unreachable_hub_fails_fast_without_hf_hub_offline(tmp_path):
    """No HF_HUB_OFFLINE, and the hub's port refuses: the libraries would retry for about 25 s per file; one
    connection attempt decides, then the cache is read and the message says so."""
    with socket.socket() as s:  # a local port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "home")}
    t0 = time.time()
    res = subprocess.run(
        command("run", "--backbone", "hf", "--vision", "org/vision", "--llm", "org/llm", "--output", tmp_path / "out"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    msg = one_line(res.stderr)
    assert (
        "cannot load vision tower 'org/vision': it is not in the local Hugging Face cache and the hub is "
        f"unreachable (cannot connect to 127.0.0.1:{port}" in msg
    )
    assert time.time() - t0 < 60
