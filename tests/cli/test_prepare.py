"""`alignbench prepare` itself still runs (reduced budget), and the shipped weights match their manifest."""

import json

from alignbench.backbones.prepared import verified as _valid
from alignbench.backbones.spec import from_flat, replace_flat
from alignbench.backbones.tiny import ASSETS, TinyConfig, load_tiny, locate
from tests.support.cli import cli


def test_shipped_backbone_matches_its_manifest():
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    stale = "shipped weights are stale: run `alignbench prepare --output alignbench/assets/tiny`"
    assert manifest["key"] == TinyConfig().key(), stale
    assert _valid(ASSETS, TinyConfig().key())
    assert locate(TinyConfig()) == ASSETS
    assert manifest["command"].startswith("alignbench prepare")
    assert sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) < 20 * 2**20


def test_prepare_runs_on_a_reduced_budget(tmp_path):
    out = tmp_path / "tiny"
    args = [
        "--output",
        str(out),
        "--llm-steps",
        "3",
        "--vision-steps",
        "3",
        "--soft-input-steps",
        "2",
        "--vision-pool",
        "4",
    ]
    res = cli("prepare", *args)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    cfg = from_flat(TinyConfig, manifest["config"])
    assert cfg.llm.steps == 3 and cfg.soft_input.steps == 2 and cfg.vision_pool == 4 and _valid(out, cfg.key())
    assert manifest["command"] == "alignbench prepare " + " ".join(args)
    assert manifest["stage1"]["key"] == cfg.stage1().key()  # stage 1 prepared first, then continued
    assert set(manifest["sha256"]) >= {"vision/model.safetensors", "llm/model.safetensors", "tokenizer/tokenizer.json"}


def test_cached_backbone_is_reused_and_tampering_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNBENCH_CACHE", str(tmp_path))
    cfg = replace_flat(TinyConfig(), vision_steps=2, llm_steps=2, vision_pool=2, soft_input_steps=2)
    logs: list[str] = []
    b = load_tiny(cfg, log=logs.append)
    assert any("preparing it once" in line for line in logs)
    assert locate(cfg.stage1()) is not None  # stage 1 is cached on its own and reused by stage-2 variants
    logs.clear()
    load_tiny(cfg, log=logs.append)
    assert not any("preparing" in line for line in logs)  # the cache hit prepares nothing
    path = tmp_path / "backbones" / b.key  # the backbone's key names the folder its weights were prepared in
    assert json.loads((path / "manifest.json").read_text())["key"] == cfg.key()
    (path / "llm" / "model.safetensors").write_bytes(b"corrupt")
    assert locate(cfg) is None  # a damaged cache entry is never loaded
