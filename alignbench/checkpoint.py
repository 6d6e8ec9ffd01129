"""What a run trained, saved beside its results: `connector.safetensors` always, `llm.safetensors` when the
LLM trained (stage `full`). Together with `config.json` they rebuild the trained model by themselves;
nothing is unpickled (safetensors and JSON only).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import torch

from .backbone import Backbone
from .connector import ConnectorContext, build_connector
from .errors import AlignBenchError
from .model import VLM

CONNECTOR_FILE = "connector.safetensors"
LLM_FILE = "llm.safetensors"


def _save(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_model(module, str(tmp))  # handles tied (shared) tensors
    os.replace(tmp, path)


def save_trained(run_dir: Path, model: VLM, stage: str) -> None:
    _save(model.connector, run_dir / CONNECTOR_FILE)
    if stage == "full":
        _save(model.llm, run_dir / LLM_FILE)


def has_weights(run_dir: Path) -> bool:
    return (run_dir / CONNECTOR_FILE).is_file() and (run_dir / "config.json").is_file()


def load_trained(run_dir: Path, backbone: Backbone, device: str = "cpu") -> tuple[VLM, dict]:
    """Rebuild the trained model of a run directory on `backbone` (which must be the run's backbone)."""
    from safetensors.torch import load_model

    run_dir = Path(run_dir)
    if not has_weights(run_dir):
        raise AlignBenchError(f"{run_dir} holds no trained weights ({CONNECTOR_FILE} and config.json); "
                              "train it again with `alignbench run`")
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("backbone_key") not in (None, backbone.key):
        raise AlignBenchError(f"{run_dir} was trained on backbone {config['backbone_key']}, not {backbone.key}; "
                              "load the run's own backbone")
    if (run_dir / LLM_FILE).is_file():
        backbone = dataclasses.replace(backbone, llm=copy.deepcopy(backbone.llm))
        load_model(backbone.llm, str(run_dir / LLM_FILE), device=str(device))
    ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
    connector = build_connector(config["connector"], ctx, config.get("connector_args", {}),
                                config["train"]["init_seed"])
    load_model(connector, str(run_dir / CONNECTOR_FILE), device=str(device))
    connector.to(device).on_llm_loaded(backbone.llm)
    model = VLM(backbone, connector).eval()
    return model, config
