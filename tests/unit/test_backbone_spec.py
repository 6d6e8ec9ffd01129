"""The prepared backbones' configs: grouped in code, flat in their content keys and manifests."""

import dataclasses

import pytest

from alignbench.backbones.spec import flat, from_flat, replace_flat
from alignbench.backbones.tiny import TinyConfig
from alignbench.backbones.token_tower import TowerConfig


@pytest.mark.parametrize("cls", [TinyConfig, TowerConfig])
def test_the_flat_form_round_trips_and_names_every_setting_once(cls):
    cfg = cls()
    values = flat(cfg)
    assert from_flat(cls, values) == cfg
    assert not any(dataclasses.is_dataclass(v) for v in values.values())
    assert len(values) == len(set(values))


def test_flat_keys_carry_the_group_prefix_and_changes_reach_the_group():
    cfg = replace_flat(TinyConfig(), vision_steps=7, soft_input_lr=0.5, seed=3)
    assert (cfg.vision.steps, cfg.soft_input.lr, cfg.seed) == (7, 0.5, 3)
    assert cfg.llm == TinyConfig().llm  # other groups untouched
    values = flat(cfg)
    assert values["vision_steps"] == 7 and values["llm_steps"] == TinyConfig().llm.steps
    assert "vision_hidden" in values and "hidden" not in values


def test_the_token_tower_writes_its_group_without_a_prefix():
    values = flat(replace_flat(TowerConfig(), steps=5))
    assert values["steps"] == 5 and "net_steps" not in values and values["pool"] == TowerConfig().pool
    assert values["rows"] == TowerConfig().grid.rows and "grid_rows" not in values


def test_a_changed_setting_changes_the_content_key_and_stage_two_settings_count_only_with_stage_two():
    base = TinyConfig()
    assert replace_flat(base, llm_lr=1e-4).key() != base.key()
    assert replace_flat(base, soft_input_lr=1e-4).key() != base.key()
    no_stage2 = base.stage1()
    assert no_stage2.soft_input.steps == 0
    assert replace_flat(no_stage2, soft_input_lr=1e-4).key() == no_stage2.key()
