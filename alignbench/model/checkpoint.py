"""What a run trained, saved beside its results: `connector.safetensors` always, `llm.safetensors` when the
LLM trained (stage `full`), `lora.safetensors` when LoRA adapters did (stage `lora`). Together with
`config.json` they rebuild the trained model by themselves;
nothing is unpickled (safetensors and JSON only).

Training checkpoints (resumable runs) live in `RUN_DIR/checkpoints/`:

    checkpoints/step-0000050/connector.safetensors   (and llm / lora.safetensors in stage `full` / `lora`)
    checkpoints/step-0000050/state.safetensors       optimizer moments, RNG state
    checkpoints/step-0000050/state.json              step, optimizer hyper-parameters, data order, losses
    checkpoints/step-0000050/sha256.json             the SHA-256 of each file above, checked on resume
    checkpoints/latest.json                          names the newest complete checkpoint

A checkpoint is written into a temporary folder, synced and renamed; only then does `latest.json` (itself
written to a temporary name and renamed) point at it. A process killed at any moment therefore leaves
`latest.json` naming a complete checkpoint, the previous one or none.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from ..backbones.base import Backbone
from ..config.run import read_saved_config
from ..connector import build_connector
from ..errors import AlignBenchError
from ..io import atomic_path, publish_dir
from . import lora
from .vlm import VLM

CONNECTOR_FILE = "connector.safetensors"
LLM_FILE = "llm.safetensors"
LORA_FILE = "lora.safetensors"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
CHECKSUMS = "sha256.json"  # in each checkpoint folder: the SHA-256 of every other file


def _save(module: torch.nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_model

    try:
        with atomic_path(path) as tmp:
            save_model(module, str(tmp))  # handles tied (shared) tensors
    except (OSError, SafetensorError) as exc:
        raise AlignBenchError(
            f"could not write the trained weights {str(path)!r} ({exc}); free space, then continue "
            f"with: alignbench run --resume {str(path.parent.resolve())!r}"
        ) from None


def training_backbone(backbone: Backbone, train: dict) -> Backbone:
    """`backbone` with the LLM a run of training configuration `train` (a `TrainConfig` as a dict) trains: the
    shared one where the LLM stays frozen; a float32 copy in stage `full` (under autocast, as bfloat16 weights
    would round small updates away); a copy with LoRA adapters attached in stage `lora`."""
    stage = train.get("stage", "connector")
    if stage == "full":
        return dataclasses.replace(backbone, llm=copy.deepcopy(backbone.llm).float())
    if stage == "lora":
        llm = copy.deepcopy(backbone.llm)
        lora.attach(
            llm,
            int(train["lora_rank"]),
            float(train["lora_alpha"]),
            str(train["lora_targets"]),
            int(train["init_seed"]),
        )
        return dataclasses.replace(backbone, llm=llm)
    return backbone


def llm_file(stage: str) -> str | None:
    """The file holding what a run of `stage` trained in the LLM (None: nothing trained there)."""
    return {"full": LLM_FILE, "lora": LORA_FILE}.get(stage)


def save_trained(run_dir: Path, model: VLM, stage: str) -> None:
    _save(model.connector, run_dir / CONNECTOR_FILE)
    if stage == "full":
        _save(model.llm, run_dir / LLM_FILE)
    elif stage == "lora":
        _save(lora.adapters(model.llm), run_dir / LORA_FILE)


def load_llm_trained(run_dir: Path, model_llm: torch.nn.Module, stage: str, device: str) -> None:
    """Load what a run of `stage` trained in the LLM into `model_llm` (already built by `training_backbone`)."""
    from safetensors.torch import load_model

    if stage == "full":
        load_model(model_llm, str(Path(run_dir) / LLM_FILE), device=str(device))
    elif stage == "lora":
        load_model(lora.adapters(model_llm), str(Path(run_dir) / LORA_FILE), device=str(device))


def has_weights(run_dir: Path, stage: str = "connector") -> bool:
    """Whether `run_dir` holds its config and every weight file a run of `stage` writes."""
    extra = llm_file(stage)
    return (
        (run_dir / CONNECTOR_FILE).is_file()
        and (run_dir / "config.json").is_file()
        and (extra is None or (run_dir / extra).is_file())
    )


def load_trained(run_dir: Path, backbone: Backbone, device: str = "cpu") -> tuple[VLM, dict]:
    """Rebuild the trained model of a run directory on `backbone` (which must be the run's backbone); the model and
    the run's config.json as saved."""
    from safetensors.torch import load_model

    run_dir = Path(run_dir)
    if not has_weights(run_dir):
        raise AlignBenchError(
            f"{run_dir} holds no trained weights ({CONNECTOR_FILE} and config.json); "
            "train it again with `alignbench run`"
        )
    config = read_saved_config(run_dir)
    if config.get("backbone_key") not in (None, backbone.key):
        raise AlignBenchError(
            f"{run_dir} was trained on backbone {config['backbone_key']}, not {backbone.key}; "
            "load the run's own backbone"
        )
    stage = config.get("train", {}).get("stage", "connector")
    if not has_weights(run_dir, stage):
        raise AlignBenchError(
            f"{run_dir} was trained in stage {stage} but its {llm_file(stage)} is missing; "
            "train it again with `alignbench run`"
        )
    if stage == "full":  # the trained weights are loaded into a copy in the backbone's own dtype
        backbone = dataclasses.replace(backbone, llm=copy.deepcopy(backbone.llm))
    elif stage == "lora":
        backbone = training_backbone(backbone, config["train"])
    load_llm_trained(run_dir, backbone.llm, stage, device)
    ctx = backbone.connector_context()
    connector = build_connector(
        config["connector"], ctx, config.get("connector_args", {}), config["train"]["init_seed"]
    )
    load_model(connector, str(run_dir / CONNECTOR_FILE), device=str(device))
    connector.to(device).on_llm_loaded(backbone.llm)
    model = VLM(backbone, connector).eval()
    return model, config


# ---------------------------------------------------------------- resumable training checkpoints


def _optimizer_split(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer `state_dict()` as safetensors-ready tensors plus JSON-ready everything else."""
    tensors, per_param = {}, {}
    for idx, entry in state["state"].items():
        per_param[str(idx)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                per_param[str(idx)][key] = value
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def _optimizer_join(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {int(idx): dict(entry) for idx, entry in meta["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    step: int,
    module_states: dict[str, dict[str, torch.Tensor]],
    optimizer_state: dict,
    state: dict,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint after `step` completed steps, then make it the latest; older ones are removed.

    `module_states` are whole tensors by module name (`connector`, `llm`; see `dist.engine.full_state`), so the
    checkpoint is the same whether one process or N wrote it; `optimizer_state` is an optimizer `state_dict()`
    with whole tensors; `state` is JSON (data order, losses, ...), `tensors` are extra tensors (RNG state).
    Only one process (rank 0) calls it."""
    from safetensors import SafetensorError

    root = Path(run_dir) / CHECKPOINTS
    tmp = root / f".step-{step:07d}.tmp{os.getpid()}"
    try:
        return _save_checkpoint(root, tmp, step, module_states, optimizer_state, state, tensors)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # what was half-written; the previous checkpoint stays the latest
        raise AlignBenchError(
            f"could not write the checkpoint of step {step} in {str(root)!r} ({exc}); the previous "
            "checkpoint is intact: free space, then continue with: alignbench run --resume "
            f"{str(Path(run_dir).resolve())!r}"
        ) from None


def _save_checkpoint(
    root: Path,
    tmp: Path,
    step: int,
    module_states: dict[str, dict[str, torch.Tensor]],
    optimizer_state: dict,
    state: dict,
    tensors: dict[str, torch.Tensor] | None,
) -> Path:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key, tensors_of_module in module_states.items():
        save_file(tensors_of_module, str(tmp / f"{key}.safetensors"))
    opt_tensors, opt_meta = _optimizer_split(optimizer_state)
    save_file(
        opt_tensors | {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()},
        str(tmp / STATE_TENSORS),
    )
    (tmp / STATE_JSON).write_text(
        json.dumps({"step": step, "modules": sorted(module_states), "optimizer": opt_meta, **state}, indent=1)
    )
    digests = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}  # checked on resume: a flipped bit is refused
    (tmp / CHECKSUMS).write_text(json.dumps(digests, indent=1))
    # A folder left under this name by a save interrupted before it was published was never the latest: replaced.
    publish_dir(tmp, root / name, replace=True)
    with atomic_path(root / LATEST) as pointer:
        pointer.write_text(json.dumps({"step": step, "dir": name}, indent=1))
    for old in root.iterdir():
        if old.name not in (name, LATEST):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    return root / name


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint, or None when training has written none. The pointer
    must name a folder `step-NNNNNNN` of its own step inside `checkpoints/` (never a path elsewhere); checkpoint
    folders without a pointer are reported, not silently ignored (training would restart from step 0)."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if not pointer.is_file():
        found = (
            sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.startswith("step-")) if root.is_dir() else []
        )
        if found:
            raise AlignBenchError(
                f"{root} holds checkpoint(s) {', '.join(found)} but no {LATEST} naming the latest "
                f'complete one; restore it (e.g. {{"step": {int(found[-1][5:])}, "dir": '
                f'"{found[-1]}"}}) to continue, or delete {root} to train from step 0'
            )
        return None
    try:
        latest = json.loads(pointer.read_text())
        step, name = int(latest["step"]), latest["dir"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AlignBenchError(
            f"checkpoint pointer {pointer} is unreadable ({exc}); delete {root} to restart training from scratch"
        ) from None
    if name != f"step-{step:07d}":
        raise AlignBenchError(
            f"checkpoint pointer {pointer} names {name!r} for step {step}, not a checkpoint "
            f"folder of this run (step-{step:07d}); delete {root} to restart training from scratch"
        )
    return step, root / name


def verify_checkpoint(folder: Path) -> None:
    """Every file of a checkpoint matches the SHA-256 written with it (checkpoints written before the digests
    existed have none and are read as they are)."""
    listed = folder / CHECKSUMS
    if not listed.is_file():
        return
    try:
        digests = json.loads(listed.read_text())
        bad = [
            name
            for name, digest in digests.items()
            if "/" in name or not (folder / name).is_file() or sha256_file(folder / name) != digest
        ]
    except (OSError, ValueError, AttributeError) as exc:
        raise AlignBenchError(
            f"checkpoint {folder}: {CHECKSUMS} is unreadable ({exc}); delete {folder.parent} to "
            "restart training from scratch"
        ) from None
    if bad:
        raise AlignBenchError(
            f"checkpoint {folder} is corrupt: {', '.join(bad)} no longer match(es) the SHA-256 "
            f"written with it; delete {folder.parent} to restart training from scratch"
        )


def load_checkpoint(run_dir: Path, modules: list[str]) -> tuple[dict, dict, dict, dict[str, torch.Tensor]] | None:
    """Read the latest checkpoint: (JSON state, whole tensors per module, optimizer state dict, extra tensors), or
    None. `modules` are the names it must hold. Only safetensors and JSON are read: nothing is unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    found = latest_checkpoint(run_dir)
    if found is None:
        return None
    step, folder = found
    verify_checkpoint(folder)
    try:
        state = json.loads((folder / STATE_JSON).read_text())
        if state.get("step") != step or sorted(state.get("modules", [])) != sorted(modules):
            raise ValueError(
                f"it holds step {state.get('step')} of modules {state.get('modules')}, expected step "
                f"{step} of {sorted(modules)}"
            )
        module_states = {key: load_file(str(folder / f"{key}.safetensors"), device="cpu") for key in modules}
        flat = load_file(str(folder / STATE_TENSORS), device="cpu")
        optimizer_state = _optimizer_join(state["optimizer"], flat)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise AlignBenchError(
            f"checkpoint {folder} is unreadable ({type(exc).__name__}: {exc}); delete "
            f"{folder.parent} to restart training from scratch"
        ) from None
    extra = {k.removeprefix("extra."): v for k, v in flat.items() if k.startswith("extra.")}
    return state, module_states, optimizer_state, extra


def remove_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / CHECKPOINTS, ignore_errors=True)
