"""The training key of every committed run stays what it was: sweeps re-use trained weights by that key
(results/*/trained/KEY.json), so a key that changed would silently train again. Recomputed from what each run's
config.json saved (the configuration, the connector's whole configuration, the backbone key, the device and the
placement), without loading a model."""

import json

import pytest

from alignbench.config.run import RunConfig
from alignbench.run.reuse import training_key
from tests.support import REPO

RESULTS = REPO / "results"
CONFIGS = sorted(p for p in RESULTS.glob("**/runs/*/config.json") if "training_key" in p.read_text())
# Runs of the first learning-rate search (results/tune), written before the placement and the micro-batch fields
# existed: the key they saved left those fields out, so the code before this layout already computed another key
# for them; it is pinned here as that code computed it.
OLDER = {
    "docvqa-align-s0-20261129-124127-ebae": "a3c75956bb1d74fa",
    "docvqa-align-s0-20261129-124129-6a8f": "bdd6ecdf83644b6e",
    "docvqa-align-s0-20261129-125151-dec5": "51c37de323e4c310",
    "docvqa-align-s0-20261129-125156-3b85": "ee893af87bf3b31f",
    "docvqa-ovis-s0-20261129-122254-9b1f": "206242f58f46f711",
    "docvqa-ovis-s0-20261129-122254-b7b9": "276b7a387a0c456f",
}


def test_there_are_committed_runs_to_check():
    assert len(CONFIGS) > 100


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_committed_training_keys_are_recomputed_bit_for_bit(path):
    saved = json.loads(path.read_text())
    cfg = RunConfig.from_dict(saved)
    placement = saved.get("distributed", {})
    spread = (placement.get("world_size", 1), placement.get("strategy", "single"))
    key = training_key(
        cfg,
        saved["connector_config"],
        saved["backbone_key"],
        saved["resolved_device"],
        spread,
        plugins=saved.get("plugins", []),
    )
    assert key == OLDER.get(path.parent.name, saved["training_key"])


def test_options_saved_as_text_load_as_the_typed_values_the_run_used():
    saved = json.loads(next(p for p in CONFIGS if '"connector_args": {}' not in p.read_text()).read_text())
    assert all(isinstance(v, str) for v in saved["connector_args"].values())  # how runs before typed options saved them
    typed = RunConfig.from_dict(saved).connector_args
    assert typed == {k: saved["connector_config"][k] for k in saved["connector_args"]}
    assert all(not isinstance(v, str) for v in typed.values())
