"""Training once per training configuration: "the same trained run" is defined here and nowhere else.

A run's training key (`training_key`) is a content hash of everything that decides its trained weights (not the
evaluated task or its split): runs with the same key would train bit for bit the same connector, so the later
ones re-use the weights of the first. OUTPUT/trained/KEY.json (the training index) names the run that trained
them; a sweep trains each connector once on its training tasks and scores every task with it, and the probes
find the runs they examine by the same key (`trained_run`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..config.run import RunConfig
from ..connector import CONNECTORS, parse_connector_args
from ..errors import AlignBenchError
from ..io import atomic_write, lock
from ..model.checkpoint import CONNECTOR_FILE, has_weights, load_llm_trained
from ..model.vlm import VLM
from ..plugins import loaded_plugins
from .outputs import run_path

TRAINED = "trained"  # OUTPUT/trained/KEY.json: the run whose weights a training configuration produced


def with_default_lr(cfg: RunConfig) -> RunConfig:
    """`cfg` with the connector's own learning rate where it gives none, so the dump states the value used."""
    if cfg.train.lr is not None:
        return cfg
    default_lr = CONNECTORS.get(cfg.connector).default_lr
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=default_lr))


def connector_config_of(cfg: RunConfig) -> dict:
    """The connector's whole configuration for `cfg`: its defaults with the run's options."""
    return asdict(parse_connector_args(CONNECTORS.get(cfg.connector), cfg.connector_args))


def training_key(
    cfg: RunConfig,
    connector_config: dict,
    backbone_key: str,
    device: str,
    spread: tuple[int, str] = (1, "single"),
    plugins: Sequence[str] | None = None,
) -> str:
    """A content key of everything that decides the trained weights (not the evaluated task or its split):
    runs with the same key would train bit for bit the same connector, so the later ones re-use it.
    `connector_config` is the connector's whole configuration (as config.json records it); `spread` (processes,
    DDP or FSDP) changes the rounding, so it is part of the key on several processes; `plugins`: the plug-in files
    loaded (default: this process's)."""
    data = asdict(cfg.data)
    for name in ("eval_questions", "eval_limit", "eval_split"):  # evaluation only
        data.pop(name)
    data["train_tasks"] = cfg.train_tasks
    what = {
        "connector": cfg.connector,
        "connector_config": connector_config,
        "backbone": cfg.backbone.key_fields(),
        "backbone_key": backbone_key,
        "data": data,
        "train": cfg.train.key_fields(),
        "device": device,
        "plugins": loaded_plugins() if plugins is None else list(plugins),
    } | ({"placement": list(spread)} if spread[0] > 1 else {})
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_lock(output: Path, key: str):
    """Held while a training configuration trains, so a parallel job with the same key waits and re-uses it."""
    (output / TRAINED).mkdir(exist_ok=True)
    return lock(output / TRAINED / f".{key}.lock")


def register_trained(output: Path, key: str, run_dir: Path, stats: dict) -> None:
    atomic_write(output / TRAINED / f"{key}.json", json.dumps({"run_id": run_dir.name, "stats": stats}, indent=2))


def check_reuse_source(folder: Path) -> Path:
    """An output directory whose trained weights a run may re-use (`--reuse-from`): one that has a training index."""
    if not (folder / TRAINED).is_dir():
        raise AlignBenchError(
            f"--reuse-from {str(folder)!r}: no {TRAINED}/ index of trained weights there; give the "
            "--output of an earlier run, sweep or search (it holds runs/ and trained/)"
        )
    return folder


def trained_source(outputs: Sequence[Path], key: str, run_dir: Path | None, stage: str) -> dict | None:
    """The finished run that trained with `key` ({"run_id", "stats", "source": its run directory, "trained_in": its
    run id in the run's own output, outputs[0], else its run directory}), in the first of `outputs` that has one, or
    None when none has (or its weights are gone)."""
    for output in outputs:
        entry = output / TRAINED / f"{key}.json"
        if not entry.is_file():
            continue
        try:
            found = json.loads(entry.read_text())
            run_id = found["run_id"]
        except (ValueError, KeyError, TypeError):
            continue
        try:  # a name read back from the output directory must stay inside it
            source = run_path(output, run_id)
        except AlignBenchError:
            raise AlignBenchError(
                f"{entry} names run {run_id!r}, which is not a run directory under "
                f"{output / 'runs'}; delete the file (the run then trains again)"
            ) from None
        if source != run_dir and has_weights(source, stage):
            return found | {"source": str(source), "trained_in": run_id if output == outputs[0] else str(source)}
    return None


def load_reused(source: Path, model: VLM, stage: str, device: str) -> None:
    """Load the weights a finished run trained (every process reads them) into `model`."""
    from safetensors.torch import load_model

    load_llm_trained(source, model.llm, stage, device)
    load_model(model.connector, str(source / CONNECTOR_FILE), device=str(device))
    model.connector.on_llm_loaded(model.llm)
    model.eval()


def trained_run(outputs: Sequence[Path], cfg: RunConfig, backbone_key: str, device: str) -> Path | None:
    """The finished run under the first of `outputs` that has one that trained the weights `cfg` would train (the
    same training key, on this backbone and device), or None."""
    cfg = with_default_lr(cfg)
    key = training_key(cfg, connector_config_of(cfg), backbone_key, device)
    found = trained_source(list(outputs), key, None, cfg.train.stage)
    return Path(found["source"]) if found is not None else None
