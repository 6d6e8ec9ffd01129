"""The pipeline, top to bottom: backbone -> data -> vision features -> connector -> train -> evaluate -> write.

A `Workspace` keeps what every run of a sweep shares (the backbone, the splits and the frozen vision
tower's features), so a sweep runs the vision tower once per task, not once per connector.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .backbone import Backbone, BackboneConfig, load_backbone
from .checkpoint import save_trained
from .connector import CONNECTORS, ConnectorContext, build_connector, parse_connector_args
from .data import DataConfig, Split, load_split
from .errors import AlignBenchError
from .evaluate import EvalConfig, evaluate
from .model import VLM
from .results import (
    append_leaderboard,
    git_commit,
    leaderboard_row,
    machine,
    new_run_dir,
    prepare_output,
    versions,
    write_run,
)
from .task import TASKS, Task
from .tiny import cache_root
from .train import TrainConfig, train


@dataclass
class RunConfig:
    connector: str = "align"
    task: str = "docvqa"
    connector_args: dict[str, str] = field(default_factory=dict)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"

    def validate(self) -> None:
        TASKS.get(self.task)
        parse_connector_args(CONNECTORS.get(self.connector), self.connector_args)
        self.train.validate()
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise AlignBenchError(f"unknown device {self.device!r}; use auto, cpu or cuda[:N]")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise AlignBenchError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Rebuild from a dumped config.json."""
        return cls(connector=d["connector"], task=d["task"], connector_args=d.get("connector_args", {}),
                   backbone=BackboneConfig(**d["backbone"]), data=DataConfig(**d["data"]),
                   train=TrainConfig(**d["train"]), eval=EvalConfig(**d["eval"]), device=d.get("device", "auto"))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Workspace:
    """Shared, read-only state across the runs of one process: backbone, splits, vision features."""

    def __init__(self, backbone_cfg: BackboneConfig, data_cfg: DataConfig, device: str, log=print):
        self.backbone_cfg, self.data_cfg, self.device, self.log = backbone_cfg, data_cfg, device, log
        self._backbone: Backbone | None = None
        self._splits: dict[tuple[str, str], tuple[Split, torch.Tensor]] = {}

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.backbone_cfg)
            self._backbone.vision.to(self.device)
            self._backbone.llm.to(self.device)
        return self._backbone

    def data(self, task: Task, name: str) -> Split:
        """The split's samples and images (generated and cached on disk once), without vision features."""
        from .embedded import PageSpec

        spec = PageSpec(**self.backbone.info["page"]) if "page" in self.backbone.info else PageSpec()
        return load_split(task, name, self.data_cfg, spec, cache_root())

    def split(self, task: Task, name: str) -> tuple[Split, torch.Tensor]:
        if (task.name, name) not in self._splits:
            t0 = time.time()
            split = self.data(task, name)
            feats = self.backbone.encode_images(split.images, device=self.device)  # [n_images, N, d]
            self.log(f"{task.name}/{name}: {len(split.samples)} questions on {len(split.images)} pages "
                     f"(data + vision features {time.time() - t0:.1f} s)")
            self._splits[(task.name, name)] = (split, feats)
        return self._splits[(task.name, name)]


def run(cfg: RunConfig, output: Path, workspace: Workspace | None = None, progress=None, log=print) -> dict:
    """Train one connector on one task, evaluate it, write its run directory and leaderboard row."""
    cfg.validate()
    if cfg.train.lr is None:  # resolve the connector's own default so the dump states the value used
        default_lr = CONNECTORS.get(cfg.connector).default_lr
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=default_lr))
    t0 = time.time()
    device = resolve_device(cfg.device)
    prepare_output(output)
    ws = workspace or Workspace(cfg.backbone, cfg.data, device, log)
    task = TASKS.get(cfg.task)

    # 1. backbone (the LLM is copied when it trains, so the shared one stays pristine)
    backbone = ws.backbone
    if cfg.train.stage == "full":
        backbone = dataclasses.replace(backbone, llm=copy.deepcopy(backbone.llm))
    # 2. data and frozen vision features
    train_split, train_feats = ws.split(task, "train")
    eval_split, eval_feats = ws.split(task, cfg.data.eval_split)
    # 3. connector, with its own init seed
    ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
    connector = build_connector(cfg.connector, ctx, cfg.connector_args, cfg.train.init_seed).to(device)
    model = VLM(backbone, connector)
    # 4. train, 5. evaluate
    stats = train(model, task, train_split, train_feats, cfg.train, cfg.data.seed, device, progress, log)
    result, records = evaluate(model, task, eval_split, eval_feats, cfg.eval, device, progress)
    result["connector_diagnostics"] = connector.diagnostics(eval_feats[:64].to(device))
    # 6. write
    config = asdict(cfg) | {
        "connector_config": asdict(connector.config), "connector_tokens": connector.num_tokens(backbone.num_patches),
        "dims": {"vision_dim": backbone.vision_dim, "llm_dim": backbone.llm_dim, "num_patches": backbone.num_patches},
        "backbone_key": backbone.key, "resolved_device": device,
    }
    result |= stats | {"task": task.name, "connector": cfg.connector, "backbone_key": backbone.key,
                       "wall_seconds": round(time.time() - t0, 2), "versions": versions(), "commit": git_commit(),
                       "device": device, "machine": machine()}
    run_dir = new_run_dir(output, task.name, cfg.connector, cfg.data.seed)
    save_trained(run_dir, model, cfg.train.stage)
    write_run(run_dir, config, result, records)
    append_leaderboard(output, leaderboard_row(run_dir, config, result))
    result["run_dir"] = str(run_dir)
    return result


# ---------------------------------------------------------------- parallel sweeps

_WORKSPACE: Workspace | None = None


def quiet_libraries() -> None:
    """Our own progress bars and messages replace the libraries' per-file loading bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet_libraries()


def _run_in_worker(cfg: RunConfig, output: Path) -> dict:
    """One sweep job in a worker process; the workspace is kept for the worker's next job."""
    global _WORKSPACE
    if _WORKSPACE is None:
        _WORKSPACE = Workspace(cfg.backbone, cfg.data, resolve_device(cfg.device), log=lambda *a, **k: None)
    return run(cfg, output, _WORKSPACE, progress=None, log=lambda *a, **k: None)


def run_parallel(configs: list[RunConfig], output: Path, jobs: int, on_result=None) -> list[dict]:
    """Run sweep jobs in `jobs` processes of `cpu_count // jobs` threads each (CPU sweeps: small matrices
    use cores better as separate processes than as threads of one). Results come back in input order."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(_run_in_worker, cfg, output) for cfg in configs]
        results = []
        for fut in futures:
            results.append(fut.result())
            if on_result:
                on_result(results[-1])
    return results
