"""The pipeline, top to bottom: backbone -> data -> vision features -> connector -> train -> evaluate -> write.

A `Workspace` keeps what every run of a sweep shares (the backbone, the splits and the frozen vision
tower's features), so a sweep runs the vision tower once per task, not once per connector; the features
are also cached on disk (`alignbench.feature_cache`) for other processes and later sweeps.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .backbone import Backbone, BackboneConfig, LazyFeatures, PatchBatch, load_backbone
from .checkpoint import (
    CONNECTOR_FILE,
    has_weights,
    load_llm_trained,
    remove_checkpoints,
    save_trained,
    training_backbone,
)
from .connector import CONNECTORS, build_connector, parse_connector_args
from .data import DataConfig, Split, load_split
from .distributed import (
    ParallelConfig,
    context,
    device_for,
    is_sharded,
    placement,
    resolve_parallel,
    unshard_into,
)
from .errors import AlignBenchError
from .evaluate import EvalConfig, evaluate
from .feature_cache import FeatureCache, compute_features
from .model import VLM, ConnectorContractError
from .registry import load_plugin, loaded_plugins
from .results import (
    LEADERBOARD,
    append_leaderboard,
    atomic_write,
    git_commit,
    leaderboard_row,
    machine,
    new_run_dir,
    prepare_output,
    read_leaderboard,
    run_path,
    versions,
    write_run,
)
from .task import TASKS, Task
from .tiny import cache_root
from .tracking import CURVE, curve_csv
from .train import (
    DEFAULT_CHECKPOINT_EVERY,
    TrainConfig,
    TrainingDiverged,
    TrainSource,
    connector_stage_sources,
    train,
)


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
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # several processes: DDP or FSDP

    @property
    def train_tasks(self) -> list[str]:
        """The tasks whose training splits train the connector (the evaluated task's by default)."""
        return list(self.data.train_tasks) if self.data.train_tasks else [self.task]

    def validate(self) -> None:
        TASKS.get(self.task)
        for name in self.train_tasks:
            TASKS.get(name)
        if len(set(self.train_tasks)) != len(self.train_tasks):
            raise AlignBenchError(f"--train-tasks {','.join(self.train_tasks)} names a task twice; name each once")
        if self.data.train_source is not None and len(self.train_tasks) > 1:
            raise AlignBenchError("--train-data names one training set, but --train-tasks names several tasks; "
                                  "leave --train-data out to train on each task's own training set")
        parse_connector_args(CONNECTORS.get(self.connector), self.connector_args)
        self.backbone.validate()
        self.data.validate()
        self.train.validate()
        connector_stage_sources(self.train, self.train_tasks)  # its tasks are among the training tasks
        self.parallel.validate()
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise AlignBenchError(f"unknown device {self.device!r}; use auto, cpu or cuda[:N]")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise AlignBenchError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Rebuild from a dumped config.json (fields added since it was written take their defaults)."""
        return cls(connector=d["connector"], task=d["task"], connector_args=d.get("connector_args", {}),
                   backbone=_fields(BackboneConfig, d["backbone"]), data=_fields(DataConfig, d["data"]),
                   train=_fields(TrainConfig, d["train"]), eval=_fields(EvalConfig, d["eval"]),
                   device=d.get("device", "auto"), parallel=_fields(ParallelConfig, d.get("parallel", {})))


def _fields(cls, values: dict):
    """`cls(**values)` for a dataclass, refusing names it does not have (a config from a newer version)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AlignBenchError(f"the saved configuration has {cls.__name__} field(s) {unknown} this version does not "
                              "know; use the AlignBench version that wrote it")
    return cls(**values)


def resolve_device(device: str) -> str:
    """"auto" is CUDA when there is a GPU; with several processes each takes its own (cuda:LOCAL_RANK)."""
    return device_for(device, context())


# Vision features of a split are computed once and kept in memory up to this size; larger splits (real
# datasets, tiling) run the frozen tower on each batch's pages instead (`LazyFeatures`).
PRECOMPUTE_BYTES = 2 * 2**30


class Workspace:
    """Shared, read-only state across the runs of one process: backbone, splits, vision features.

    With `feature_cache` (the default) the frozen tower's features also go to disk
    (`alignbench.feature_cache`), so other processes and later sweeps read them instead of running the
    tower again. `seconds` adds up where this workspace's time went ("data", "features")."""

    def __init__(self, backbone_cfg: BackboneConfig, data_cfg: DataConfig, device: str, log=print,
                 feature_cache: bool = True):
        self.backbone_cfg, self.data_cfg, self.device, self.log = backbone_cfg, data_cfg, device, log
        self._backbone: Backbone | None = None
        self._splits: dict[tuple[str, str, str], tuple[Split, torch.Tensor | PatchBatch | LazyFeatures]] = {}
        self.precompute_bytes = PRECOMPUTE_BYTES
        self.features = FeatureCache(cache_root(), log) if feature_cache else None
        self.seconds = {"data": 0.0, "features": 0.0}

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.backbone_cfg, device=self.device)
            info = self._backbone.info
            if "dtype" in info:
                self.log(f"backbone {self._backbone.key}: {info['dtype']} on {self.device}, {info['num_patches']} "
                         f"patches per tile, tiles per image at most {info.get('max_tiles', 1)}"
                         + (" + thumbnail" if info.get("max_tiles", 1) > 1 else ""))
        return self._backbone

    def data(self, task: Task, name: str, data_cfg: DataConfig | None = None) -> Split:
        """The split's samples and images (generated and cached on disk once), without vision features."""
        from .embedded import PageSpec

        spec = PageSpec(**self.backbone.info["page"]) if "page" in self.backbone.info else PageSpec()
        return load_split(task, name, data_cfg or self.data_cfg, spec, cache_root(), self.backbone.info.get("renderer"))

    def split(self, task: Task, name: str, data_cfg: DataConfig | None = None) -> tuple[Split, torch.Tensor]:
        """Samples and vision features of a split, for `data_cfg` (default: the workspace's); runs with
        different data seeds share the workspace without sharing their pages."""
        data_cfg = data_cfg or self.data_cfg
        key = (task.name, name, json.dumps(asdict(data_cfg), sort_keys=True))
        if key not in self._splits:
            _ = self.backbone  # loaded first, so that its time is not counted as data
            t0 = time.time()
            split = self.data(task, name, data_cfg)
            t1 = time.time()
            size = len(split.images) * self.backbone.max_patches * self.backbone.vision_dim * 4
            if size <= self.precompute_bytes:
                if self.features is not None:  # [n_images, N, d], or a PatchBatch for tiles of different grids
                    feats, cached = self.features.get(self.backbone, split.images, self.device)
                else:
                    feats, cached = compute_features(self.backbone, split.images, self.device), False
                how = "read from the feature cache" if cached else "computed"
            else:
                feats = LazyFeatures(self.backbone, split.images, self.device)
                how = f"computed per batch, {size / 2**30:.1f} GiB would not be kept (nor cached)"
            t2 = time.time()
            self.seconds["data"] += t1 - t0
            self.seconds["features"] += t2 - t1
            self.log(f"{task.name}/{name}: {len(split.samples)} questions on {len(split.images)} pages "
                     f"(data {t1 - t0:.1f} s, vision features {t2 - t1:.1f} s, {how})")
            self._splits[key] = (split, feats)
        return self._splits[key]


RUN_STATUS = "status.json"  # written when a run stops without results (training diverged, a connector failed)
PREDICTIONS_JOURNAL = "predictions.partial.jsonl"  # predictions so far, while the evaluation runs
# Fields of config.json that describe how a run was spread over processes, not what it computes: a run may
# be resumed on another number of processes (the training key includes the placement, which changes rounding).
PLACEMENT_KEYS = ("distributed", "resolved_device", "training_key")


def _quiet(*args, **kwargs) -> None:
    pass


# The run directory this process is writing (what an interrupted command names in its resume hint).
ACTIVE_RUN: Path | None = None
WRITER_LOCK = ".writer.lock"  # RUN_DIR/.writer.lock: held by the one process writing the run directory
WRITER_PID = ".writer.pid"
_held: list = []


@torch.no_grad()
def _check_contract(model: VLM, features: list, device: str) -> None:
    """The connector's output on one page of each distinct patch count the run will feed it (tiles give several),
    checked against its declaration (`model.check_output`) before the run directory exists: a connector that breaks
    the contract leaves nothing behind."""
    seen: dict[int, object] = {}
    for feats in features:
        if not len(feats):
            continue
        if isinstance(feats, PatchBatch):  # the first image of each patch count, without copying the rest
            lengths = feats.lengths.tolist()
            for length in sorted(set(lengths)):
                i = lengths.index(length)
                seen.setdefault(length, feats.values[i : i + 1, :length])
        else:
            first = feats[[0]]
            for _, part in first.groups() if isinstance(first, PatchBatch) else [([0], first)]:
                seen.setdefault(part.shape[1], part)
    was = model.connector.training
    model.connector.eval()
    try:
        for part in seen.values():
            model.visual_tokens(part.to(device))
    finally:
        model.connector.train(was)


def resume_command(run_dir: Path) -> str:
    """The exact command that continues `run_dir`: absolute and single-quoted, so it pastes into any shell."""
    return "alignbench run --resume '" + str(Path(run_dir).resolve()).replace("'", "'\\''") + "'"


def _hold_run_dir(run_dir: Path) -> None:
    """Take the run directory's exclusive writer lock for the rest of the run (released by `run`, or by the OS
    when the process dies); a second writer gets one line naming the PID that holds it."""
    from filelock import FileLock, Timeout

    global ACTIVE_RUN
    lock = FileLock(str(run_dir / WRITER_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            pid = (run_dir / WRITER_PID).read_text().strip() or "unknown"
        except OSError:
            pid = "unknown"
        raise AlignBenchError(f"{run_dir} is being written by another process (PID {pid}); wait for it to end, or "
                              "stop it before resuming this run") from None
    _held.append(lock)
    atomic_write(run_dir / WRITER_PID, f"{os.getpid()}\n")
    ACTIVE_RUN = run_dir


def run(cfg: RunConfig, output: Path, workspace: Workspace | None = None, progress=None, log=print, *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, resume: Path | None = None,
        plugins: Sequence[str | Path] = (), feature_cache: bool = True, reuse_from: Sequence[Path] = ()) -> dict:
    """Train one connector on one task, evaluate it, write its run directory and leaderboard row (holding the run
    directory's writer lock throughout: `_run`)."""
    global ACTIVE_RUN
    try:
        result = _run(cfg, output, workspace, progress, log, checkpoint_every=checkpoint_every, resume=resume,
                      plugins=plugins, feature_cache=feature_cache, reuse_from=reuse_from)
    except ConnectorContractError as exc:  # a connector that broke its contract on a later patch count: the run
        if ACTIVE_RUN is not None and context().is_main:  # directory says so (resumable once the connector is fixed)
            atomic_write(ACTIVE_RUN / RUN_STATUS, json.dumps({"status": "failed", "message": str(exc)}, indent=2))
        raise
    finally:
        while _held:
            lock = _held.pop()
            folder = Path(lock.lock_file).parent
            (folder / WRITER_PID).unlink(missing_ok=True)  # the run has written everything it writes: its files
            Path(lock.lock_file).unlink(missing_ok=True)  # go first, then the lock itself
            lock.release()
    ACTIVE_RUN = None  # kept when the run stops early: the interrupted command names it
    return result


def _run(cfg: RunConfig, output: Path, workspace: Workspace | None = None, progress=None, log=print, *,
         checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, resume: Path | None = None,
         plugins: Sequence[str | Path] = (), feature_cache: bool = True, reuse_from: Sequence[Path] = ()) -> dict:
    """Train one connector on one task, evaluate it, write its run directory and leaderboard row.

    The run directory is made before training: checkpoints (every `checkpoint_every` steps) and the
    predictions journal go there, so a killed run continues with `resume=RUN_DIR` (same configuration)
    and ends exactly as an uninterrupted run would. A diverged run writes `status.json`, never results or a
    leaderboard row. `plugins` are files or package directories imported first (`--plugin`); `feature_cache`
    (when no workspace is given) reads and writes the vision features on disk. Weights trained with the same
    training key are re-used from `output`, else from the outputs in `reuse_from` (`--reuse-from`), in that order.

    Under torchrun or accelerate launch every process runs this function: each trains on its share of every
    step and evaluates its share of the batches; rank 0 alone writes (run directory, leaderboard) and
    broadcasts what it decided, so the processes take the same path and fail with the same message."""
    for path in plugins:
        load_plugin(path)
    cfg.validate()
    reuse_from = [check_reuse_source(Path(r)) for r in reuse_from]
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise AlignBenchError(f"--checkpoint-every must be 0 (last step only) or more, got {checkpoint_every!r}")
    dist = context()
    if not dist.is_main:
        log, progress = _quiet, None
    parallel = resolve_parallel(cfg.parallel)
    micro, accum = cfg.train.layout(dist.world_size)  # a batch that does not divide stops here, before any work
    if cfg.train.lr is None:  # resolve the connector's own default so the dump states the value used
        default_lr = CONNECTORS.get(cfg.connector).default_lr
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=default_lr))
    t0 = time.time()
    device = resolve_device(cfg.device)
    dist.on_main(prepare_output, output)
    if resume is not None:
        resume = dist.on_main(_check_resumable, Path(resume), output)
        dist.on_main(_hold_run_dir, resume)
        if dist.is_main:  # a run that failed (its connector) continues: the failure is no longer its state
            (resume / RUN_STATUS).unlink(missing_ok=True)
        finished = dist.on_main(_finish_listed, resume, output, log)
        if finished is not None:
            return finished
    ws = workspace or Workspace(cfg.backbone, cfg.data, device, log, feature_cache)
    task = TASKS.get(cfg.task)
    # 0. the connector on the backbone before any data loads: an option that cannot work with this backbone
    #    (perceiver heads not dividing its width) stops here, before the data and the run directory
    shape = dist.main_first(lambda: ws.backbone)
    build_connector(cfg.connector, shape.connector_context(), cfg.connector_args, cfg.train.init_seed)

    def load():  # one process per machine fills the caches (data, the feature cache), then the others read them
        # 1. backbone (the LLM is copied below when it trains, so the shared one stays pristine)
        # 2. data and frozen vision features (the training splits of every training task, the evaluated task's
        #    evaluation split); rows the loader could not use are counted, never scored
        return (ws.backbone, [ws.split(TASKS.get(name), "train", cfg.data) for name in cfg.train_tasks],
                ws.split(task, cfg.data.eval_split, cfg.data))

    spent = dict(ws.seconds)
    backbone, train_splits, (eval_split, eval_feats) = dist.main_first(load)
    spent = {f"{k}_seconds": round(ws.seconds[k] - spent[k], 2) for k in spent}  # 0 when already in memory
    sources = [TrainSource(TASKS.get(name), *pair) for name, pair in zip(cfg.train_tasks, train_splits)]
    backbone = training_backbone(backbone, asdict(cfg.train))  # a copy of the LLM where it trains
    for name, split in [(f"{src.task.name}/train", src.split) for src in sources] + [
            (f"{task.name}/{cfg.data.eval_split}", eval_split)]:
        if split.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in split.skip_counts().items())
            log(f"{name}: skipped {len(split.skipped)} of {len(split.skipped) + len(split.samples)} "
                f"questions ({reasons})")
    # 3. connector, with its own init seed
    ctx = backbone.connector_context()
    connector = build_connector(cfg.connector, ctx, cfg.connector_args, cfg.train.init_seed).to(device)
    model = VLM(backbone, connector)
    _check_contract(model, [src.features for src in sources] + [eval_feats], device)
    dims = {"vision_dim": backbone.vision_dim, "llm_dim": backbone.llm_dim, "num_patches": backbone.num_patches}
    if backbone.max_patches != backbone.num_patches:
        dims["max_patches"] = backbone.max_patches
    config = json.loads(json.dumps(asdict(cfg) | {
        "connector_config": asdict(connector.config), "connector_tokens": connector.num_tokens(backbone.num_patches),
        "dims": dims, "backbone_key": backbone.key, "resolved_device": device,
        **({"backbone_source": backbone.info["source"]} if "source" in backbone.info else {}),
        "train_tasks": cfg.train_tasks,
        "training_key": training_key(cfg, connector, backbone.key, device, (dist.world_size, parallel.strategy)),
    } | ({"connector_tokens_max": connector.num_tokens(backbone.max_patches)}
         if backbone.max_patches != backbone.num_patches else {})
      | ({"plugins": loaded_plugins()} if loaded_plugins() else {})
      | {"distributed": placement(parallel, dist, micro, accum)}))
    # 4. the run directory: a fresh one, or the interrupted run's own (same configuration only); rank 0 makes it
    run_dir = dist.on_main(_open_run_dir, config, output, task.name, cfg, resume)
    if resume is None:
        dist.on_main(_hold_run_dir, run_dir)
    log(f"run directory: {run_dir} (if interrupted, continue it with: {resume_command(run_dir)})")
    # 5. train (checkpointed, resumable), or re-use the weights of a finished run with the same training
    #    configuration (a sweep trains each connector once on its training tasks, then scores every task);
    #    6. evaluate (journaled, resumable). Rank 0 holds the lock and decides; every process trains or loads.
    key = config["training_key"]
    with _training_lock(output, key) if dist.is_main else nullcontext():
        trained_in = dist.on_main(_trained_source, [output, *reuse_from], key, run_dir, cfg.train.stage)
        if trained_in is None:
            try:
                stats = train(model, sources, cfg.train, cfg.data.seed, device, progress, log,
                              checkpoint_dir=run_dir, checkpoint_every=checkpoint_every, dist=dist,
                              parallel=parallel)
            except TrainingDiverged as exc:
                if dist.is_main:
                    atomic_write(run_dir / RUN_STATUS, json.dumps({"status": "diverged", "step": exc.step,
                                                                   "checkpoint_step": exc.checkpoint_step,
                                                                   "message": str(exc)}, indent=2))
                raise
            if is_sharded(model.connector) or is_sharded(model.llm):  # FSDP: every process evaluates a whole model
                model = _gathered(model, ws, cfg, device)
            curve = stats.pop("curve")
            if dist.is_main:
                save_trained(run_dir, model, cfg.train.stage)
                atomic_write(run_dir / CURVE, curve_csv(curve))
                _register_trained(output, key, run_dir, stats)
        else:
            source = Path(trained_in["source"])
            _load_reused(source, model, cfg.train.stage, device)
            log(f"re-using the weights trained in {trained_in['trained_in']} (same training configuration, key {key}); "
                "no training")
            if dist.is_main:
                save_trained(run_dir, model, cfg.train.stage)
                source_curve = source / CURVE
                if source_curve.is_file():  # every run directory holds the curve of the weights it evaluates
                    atomic_write(run_dir / CURVE, source_curve.read_text())
            stats = trained_in["stats"] | {"trained_in": trained_in["trained_in"]}
    result, records = evaluate(model, task, eval_split, eval_feats, cfg.eval, device, progress,
                               journal=run_dir / PREDICTIONS_JOURNAL)
    diag = eval_feats[:64]
    result["connector_diagnostics"] = model.connector.diagnostics(
        (diag.largest_group() if isinstance(diag, PatchBatch) else diag).to(device))
    result["train_skipped"] = {"n": sum(len(src.split.skipped) for src in sources),
                               "reasons": dict(sum((Counter(src.split.skip_counts()) for src in sources), Counter()))}
    result["train_tasks"] = cfg.train_tasks
    # 7. write: results.json last (it marks the run finished), then the leaderboard row; rank 0 only
    result |= stats | spent | {"task": task.name, "connector": cfg.connector, "backbone_key": backbone.key,
                       "wall_seconds": round(time.time() - t0, 2), "versions": versions(), "commit": git_commit(),
                       "device": device, "machine": machine()}
    skipped = [{"split": f"{src.task.name}/train", **row} for src in sources for row in src.split.skipped] + [
        {"split": f"{task.name}/{cfg.data.eval_split}", **row} for row in eval_split.skipped]
    dist.on_main(_write_finished, run_dir, output, config, result, records, skipped)
    result["run_dir"] = str(run_dir)
    return result


SKIPPED = "skipped.jsonl"  # RUN_DIR/skipped.jsonl: every row left out, with its split, id, reason and detail


def write_skipped(run_dir: Path, skipped: list[dict]) -> None:
    """The rows the loader left out, one JSON line each, so that a user can find them (nothing when none)."""
    if skipped:
        atomic_write(run_dir / SKIPPED, "".join(json.dumps(row, default=str) + "\n" for row in skipped))


def _open_run_dir(config: dict, output: Path, task: str, cfg: RunConfig, resume: Path | None) -> Path:
    if resume is not None:
        saved = json.loads((resume / "config.json").read_text())
        differ = sorted(k for k in set(saved) | set(config)
                        if k not in PLACEMENT_KEYS and _comparable(saved, k) != _comparable(config, k))
        if differ:
            raise AlignBenchError(f"{resume} was started with another configuration ({', '.join(differ)} differ); "
                                  "resume it with its own configuration or start a new run")
        return resume
    run_dir = new_run_dir(output, task, cfg.connector, cfg.data.seed)
    atomic_write(run_dir / "config.json", json.dumps(config, indent=2))
    return run_dir


def _comparable(config: dict, key: str):
    """A config.json entry as a resume compares it: where the curves stream (`train.report_to`) may change."""
    value = config.get(key)
    if key == "train" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "report_to"}
    return value


def _write_finished(run_dir: Path, output: Path, config: dict, result: dict, records: list[dict],
                    skipped: list[dict]) -> None:
    write_skipped(run_dir, skipped)
    write_run(run_dir, config, result, records)
    append_leaderboard(output, leaderboard_row(run_dir, config, result))
    remove_checkpoints(run_dir)
    (run_dir / PREDICTIONS_JOURNAL).unlink(missing_ok=True)


def _gathered(model: VLM, ws: Workspace, cfg: RunConfig, device: str) -> VLM:
    """The FSDP-trained model, whole on every process: fresh modules of the same architecture filled with the
    sharded ones' tensors (gathered one tensor at a time). Inference holds the model in far less memory than
    training needs for it, gradients and optimizer moments."""
    llm = model.llm
    if is_sharded(model.llm):
        llm = unshard_into(model.llm, copy.deepcopy(ws.backbone.llm).float())
    backbone = dataclasses.replace(ws.backbone, llm=llm)
    connector = build_connector(cfg.connector, backbone.connector_context(), cfg.connector_args,
                                cfg.train.init_seed).to(device)
    unshard_into(model.connector, connector)
    connector.on_llm_loaded(llm)
    return VLM(backbone, connector).eval()


# ---------------------------------------------------------------- training once per training configuration

TRAINED = "trained"  # OUTPUT/trained/KEY.json: the run whose weights a training configuration produced


def training_key(cfg: RunConfig, connector, backbone_key: str, device: str,
                 spread: tuple[int, str] = (1, "single")) -> str:
    """A content key of everything that decides the trained weights (not the evaluated task or its split):
    runs with the same key would train bit for bit the same connector, so the later ones re-use it.
    `spread` (processes, DDP or FSDP) changes the rounding, so it is part of the key on several processes."""
    data = asdict(cfg.data)
    for name in ("eval_questions", "eval_limit", "eval_split"):  # evaluation only
        data.pop(name)
    data["train_tasks"] = cfg.train_tasks
    what = {"connector": cfg.connector, "connector_config": asdict(connector.config), "backbone": asdict(cfg.backbone),
            "backbone_key": backbone_key, "data": data, "train": cfg.train.key_fields(), "device": device,
            "plugins": loaded_plugins()} | ({"placement": list(spread)} if spread[0] > 1 else {})
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def _training_lock(output: Path, key: str):
    """Held while a training configuration trains, so a parallel job with the same key waits and re-uses it."""
    import fcntl

    (output / TRAINED).mkdir(exist_ok=True)
    with open(output / TRAINED / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _register_trained(output: Path, key: str, run_dir: Path, stats: dict) -> None:
    atomic_write(output / TRAINED / f"{key}.json", json.dumps({"run_id": run_dir.name, "stats": stats}, indent=2))


def check_reuse_source(folder: Path) -> Path:
    """An output directory whose trained weights a run may re-use (`--reuse-from`): one that has a training index."""
    if not (folder / TRAINED).is_dir():
        raise AlignBenchError(f"--reuse-from {str(folder)!r}: no {TRAINED}/ index of trained weights there; give the "
                              "--output of an earlier run, sweep or search (it holds runs/ and trained/)")
    return folder


def _trained_source(outputs: Sequence[Path], key: str, run_dir: Path, stage: str) -> dict | None:
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
            raise AlignBenchError(f"{entry} names run {run_id!r}, which is not a run directory under "
                                  f"{output / 'runs'}; delete the file (the run then trains again)") from None
        if source != run_dir and has_weights(source, stage):
            return found | {"source": str(source), "trained_in": run_id if output == outputs[0] else str(source)}
    return None


def _load_reused(source: Path, model: VLM, stage: str, device: str) -> None:
    """Load the weights a finished run trained (every process reads them) into `model`."""
    from safetensors.torch import load_model

    load_llm_trained(source, model.llm, stage, device)
    load_model(model.connector, str(source / CONNECTOR_FILE), device=str(device))
    model.connector.on_llm_loaded(model.llm)
    model.eval()


def _check_resumable(run_dir: Path, output: Path) -> Path:
    """The run directory to continue: one under OUTPUT/runs, started (config.json) and not diverged."""
    if not run_dir.is_dir() or run_dir.resolve().parent != (output / "runs").resolve():
        raise AlignBenchError(f"--resume {str(run_dir)!r} is not a run directory under {output / 'runs'}; "
                              "give the RUN_DIR a run printed when it started")
    if not (run_dir / "config.json").is_file():
        raise AlignBenchError(f"{run_dir} has no config.json, so it cannot be resumed; start a new run")
    status = run_dir / RUN_STATUS
    if status.is_file():
        try:
            saved = json.loads(status.read_text())
        except ValueError:
            saved = {"status": "diverged", "message": f"{status} is unreadable"}
        if saved.get("status") != "failed":  # a diverged run is over; a failed one continues once its cause is fixed
            raise AlignBenchError(f"{run_dir} stopped for good ({saved.get('message')}); start a new run")
    return run_dir


def _finish_listed(run_dir: Path, output: Path, log) -> dict | None:
    """A run killed after writing results.json: add its missing leaderboard row, or say it is complete. None
    when the run has no results yet (it is to be continued)."""
    if not (run_dir / "results.json").is_file():
        return None
    config = json.loads((run_dir / "config.json").read_text())
    result = json.loads((run_dir / "results.json").read_text())
    board = output / LEADERBOARD
    if board.is_file() and run_dir.name in set(read_leaderboard(board).run_id.astype(str)):
        raise AlignBenchError(f"{run_dir} is already finished and on the leaderboard; nothing to resume")
    append_leaderboard(output, leaderboard_row(run_dir, config, result))
    remove_checkpoints(run_dir)
    (run_dir / PREDICTIONS_JOURNAL).unlink(missing_ok=True)
    log(f"{run_dir} was finished; its leaderboard row is now written")
    return result | {"run_dir": str(run_dir)}


# ---------------------------------------------------------------- re-evaluating a checkpoint

EVALUATORS = ("alignbench", "lmms-eval")


@dataclass
class CheckpointEvalConfig:
    """`alignbench eval`: score a trained run's weights on a task, with AlignBench's evaluation or lmms-eval's."""

    checkpoint: str  # the run directory (config.json + connector.safetensors [+ llm.safetensors])
    task: str
    evaluator: str = "alignbench"  # "alignbench" or "lmms-eval"
    data: DataConfig = field(default_factory=DataConfig)  # the evaluation source (and --limit)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    lmms_task: str | None = None  # lmms-eval's task definition (default: the task's `lmms_eval_task`)
    include_path: str | None = None  # more lmms-eval task folders (YAML), as lmms-eval's --include_path


def read_run_config(run_dir: Path) -> tuple[RunConfig, dict]:
    """The configuration a run directory was made with (config.json), typed and as saved."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise AlignBenchError(f"{str(run_dir)!r} is not a run directory (no config.json); give OUTPUT/runs/RUN_ID "
                              "of a finished `alignbench run`")
    try:
        saved = json.loads(path.read_text())
        missing = [p for p in saved.get("plugins", []) if p not in loaded_plugins()]
        if missing:
            raise AlignBenchError(f"{run_dir} was made with plug-in(s) {', '.join(map(str, missing))}; pass --plugin "
                                  "for each")
        cfg = RunConfig.from_dict(saved)
        cfg.validate()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AlignBenchError(f"{path} is not an AlignBench run config ({type(exc).__name__}: {exc})") from None
    except AlignBenchError as exc:
        if "plug-in" in str(exc):
            raise
        raise AlignBenchError(f"{path} holds a value no run accepts ({exc}); was it edited? Start a new run") \
            from None
    return cfg, saved


def load_run(run_dir: Path, device: str = "auto", log=print) -> tuple[VLM, RunConfig, Workspace]:
    """Rebuild a trained model from its run directory alone: the backbone its config.json names (hub ids or
    local folders), the trained weights from its safetensors."""
    from .checkpoint import load_trained

    cfg, saved = read_run_config(run_dir)
    ws = Workspace(cfg.backbone, cfg.data, resolve_device(device), log)
    model, _ = load_trained(Path(run_dir), ws.backbone, ws.device)
    return model, cfg, ws


def evaluate_checkpoint(cfg: CheckpointEvalConfig, output: Path, progress=None, log=print) -> dict:
    """Score a checkpoint on `cfg.task`: a new directory under OUTPUT/runs (config.json, predictions.jsonl,
    results.json) and a leaderboard row marked with the evaluator and the checkpoint's run id."""
    if cfg.evaluator not in EVALUATORS:
        raise AlignBenchError(f"unknown evaluator {cfg.evaluator!r}; use {' or '.join(EVALUATORS)}")
    task = TASKS.get(cfg.task)
    dist = context()
    if dist.enabled and cfg.evaluator != "alignbench":
        raise AlignBenchError("--via lmms-eval runs in one process (lmms-eval has its own launcher: accelerate launch "
                              "-m lmms_eval --model alignbench ...); start alignbench eval without torchrun")
    if not dist.is_main:
        log, progress = _quiet, None
    t0 = time.time()
    dist.on_main(prepare_output, output)
    run_dir = Path(cfg.checkpoint)

    def load():
        model, run_cfg, ws = load_run(run_dir, cfg.device, log)
        # 1. the evaluation rows, from the configured source (the checkpoint's own by default); lmms-eval
        #    computes the vision features itself, from the images it is handed
        split, feats = ws.split(task, "eval", cfg.data) if cfg.evaluator == "alignbench" else (
            ws.data(task, "eval", cfg.data), None)
        return model, run_cfg, ws, split, feats

    model, run_cfg, ws, split, feats = dist.main_first(load)
    if split.skipped:
        log(f"{task.name}: skipped {len(split.skipped)} of {len(split.skipped) + len(split.samples)} questions "
            f"({', '.join(f'{n} {r}' for r, n in split.skip_counts().items())})")
    # 2. score them
    if cfg.evaluator == "alignbench":
        result, records = evaluate(model, task, split, feats, cfg.eval, ws.device, progress)
    else:
        from .lmms.bridge import evaluate_with_lmms_eval

        result, records = evaluate_with_lmms_eval(model, ws.backbone, task, split, cfg, log)
    # 3. write: its own directory, then the leaderboard row (the checkpoint's training settings, this task)
    row_config = json.loads(json.dumps(asdict(run_cfg) | {"task": task.name, "data": asdict(cfg.data),
                                                          "train_tasks": run_cfg.train_tasks}))
    result |= {"task": task.name, "connector": run_cfg.connector, "backbone_key": ws.backbone.key,
               "evaluator": cfg.evaluator, "checkpoint": run_dir.name, "n_skipped": len(split.skipped),
               "skipped": split.skip_counts(), "wall_seconds": round(time.time() - t0, 2), "versions": versions(),
               "commit": git_commit(), "device": ws.device, "machine": machine()}
    result["distributed"] = {"world_size": dist.world_size}
    config = json.loads(json.dumps({"kind": "checkpoint-eval", **asdict(cfg), "checkpoint_config": row_config,
                                    "distributed": result["distributed"]}))

    def write() -> Path:
        out_dir = new_run_dir(output, task.name, f"{run_cfg.connector}-{cfg.evaluator}", run_cfg.data.seed)
        write_skipped(out_dir, [{"split": f"{task.name}/{cfg.data.eval_split}", **row} for row in split.skipped])
        write_run(out_dir, config, result, records)
        append_leaderboard(output, leaderboard_row(out_dir, row_config, result))
        return out_dir

    result["run_dir"] = str(dist.on_main(write))
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


_FEATURE_CACHE = True


_REUSE_FROM: Sequence[Path] = ()


def _init_worker(threads: int, feature_cache: bool = True, reuse_from: Sequence[Path] = ()) -> None:
    global _FEATURE_CACHE, _REUSE_FROM
    torch.set_num_threads(threads)
    quiet_libraries()
    _FEATURE_CACHE, _REUSE_FROM = feature_cache, reuse_from


def _run_in_worker(cfg: RunConfig, output: Path) -> dict:
    """One sweep job in a worker process; the workspace is kept for the worker's next job."""
    global _WORKSPACE
    if _WORKSPACE is None:
        _WORKSPACE = Workspace(cfg.backbone, cfg.data, resolve_device(cfg.device), log=lambda *a, **k: None,
                               feature_cache=_FEATURE_CACHE)
    return run(cfg, output, _WORKSPACE, progress=None, log=lambda *a, **k: None, reuse_from=_REUSE_FROM)


def run_parallel(configs: list[RunConfig], output: Path, jobs: int, on_result=None,
                 feature_cache: bool = True, reuse_from: Sequence[Path] = ()) -> list[dict]:
    """Run sweep jobs in `jobs` processes of `cpu_count // jobs` threads each (CPU sweeps: small matrices
    use cores better as separate processes than as threads of one). Results come back in input order."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, feature_cache, tuple(reuse_from))) as pool:
        futures = [pool.submit(_run_in_worker, cfg, output) for cfg in configs]
        results = []
        for fut in futures:
            results.append(fut.result())
            if on_result:
                on_result(results[-1])
    return results
