"""`--attention`: the LLM's attention kernel, chosen per run, recorded in its config and, where set, in its
training key; every kernel computes the same model."""

import json

import pytest
import torch

from alignbench.backbones import load_backbone
from alignbench.config.backbone import BackboneConfig
from alignbench.config.run import RunConfig
from alignbench.run.reuse import training_key
from tests.support.cli import cli, flags


@pytest.mark.parametrize("name", ["eager", "sdpa"])
def test_the_llm_runs_the_kernel_asked_for_and_computes_the_same_logits(name):
    default = load_backbone(BackboneConfig()).llm
    chosen = load_backbone(BackboneConfig(attention=name)).llm
    assert chosen.config._attn_implementation == name
    torch.manual_seed(0)
    embeds = torch.randn(3, 11, default.config.hidden_size)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :4] = 0  # a left-padded row, as generation batches are
    with torch.no_grad():
        want = default(inputs_embeds=embeds, attention_mask=mask).logits
        got = chosen(inputs_embeds=embeds, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_a_run_records_its_kernel_and_trains_under_its_own_key(tmp_path):
    out = tmp_path / "out"
    small = flags(steps=2, batch_size=2, train_docs=3, eval_questions=3)
    res = cli("run", "--connector", "mlp", "--attention", "eager", *small, "--no-blind", "--output", out)
    assert res.returncode == 0, res.stderr
    run_dir = next((out / "runs").iterdir())
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["backbone"]["attention"] == "eager"
    assert json.loads((run_dir / "results.json").read_text())["n"] == 3
    placement = (saved["distributed"]["world_size"], saved["distributed"]["strategy"])
    args = (saved["connector_config"], saved["backbone_key"], saved["resolved_device"], placement)
    eager = RunConfig.from_dict(saved)
    assert training_key(eager, *args, plugins=saved.get("plugins", [])) == saved["training_key"]
    saved["backbone"]["attention"] = "auto"  # the same run at the default: the key runs before the option had
    assert training_key(RunConfig.from_dict(saved), *args, plugins=saved.get("plugins", [])) != saved["training_key"]
