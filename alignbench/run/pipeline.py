"""One run, top to bottom: backbone -> data -> connector -> train (or re-use) -> evaluate -> write.

`run` is the whole story in numbered steps; what it leans on lives beside it: the shared backbone, splits and
features (`workspace`), "the same trained run" (`reuse`), the run directory's writer lock and resuming
(`resume`), the output directory and its leaderboard (`outputs`, `leaderboard`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

from ..backbones.base import PatchBatch
from ..config.run import RunConfig
from ..connector import CONNECTORS, build_connector, connector_options
from ..dist.context import context, placement, resolve_parallel
from ..dist.engine import is_sharded, unshard_into
from ..errors import AlignBenchError
from ..evaluate import evaluate
from ..io import atomic_write
from ..model.checkpoint import save_trained, training_backbone
from ..model.vlm import VLM, ConnectorContractError
from ..plugins import load_plugin, loaded_plugins
from ..task import TASKS
from ..train.loop import DEFAULT_CHECKPOINT_EVERY, TrainingDiverged, TrainSource, train
from ..train.tracking import CURVE, curve_csv
from . import resume as resuming
from .outputs import git_commit, machine, prepare_output, versions
from .reuse import (
    check_reuse_source,
    load_reused,
    register_trained,
    trained_source,
    training_key,
    training_lock,
    with_default_lr,
)
from .workspace import Workspace, resolve_device


def _quiet(*args, **kwargs) -> None:
    pass


def _records_failure(fn):
    """Hold the run directory's writer lock for the whole run and leave a status a later command can read: a
    connector that broke its contract on a later patch count marks its run directory failed (resumable once the
    connector is fixed); the record of the active run is kept when the run stops early, so the interrupted command
    names it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> dict:
        try:
            result = fn(*args, **kwargs)
        except ConnectorContractError as exc:
            active = resuming.ACTIVE_RUN
            if active is not None and context().is_main:
                status = json.dumps({"status": "failed", "message": str(exc)}, indent=2)
                atomic_write(active / resuming.RUN_STATUS, status)
            raise
        finally:
            resuming.release_run_dirs()
        resuming.finished()
        return result

    return wrapper


@_records_failure
def run(
    cfg: RunConfig,
    output: Path,
    workspace: Workspace | None = None,
    progress=None,
    log=print,
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    resume: Path | None = None,
    plugins: Sequence[str | Path] = (),
    feature_cache: bool = True,
    reuse_from: Sequence[Path] = (),
) -> dict:
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
    # 0. everything that can be refused is refused before any work: the configuration, the output, the resume
    for path in plugins:
        load_plugin(path)
    cfg.validate()
    cfg = dataclasses.replace(cfg, connector_args=connector_options_of(cfg))  # typed where the library is entered
    reuse_from = [check_reuse_source(Path(r)) for r in reuse_from]
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise AlignBenchError(f"--checkpoint-every must be 0 (last step only) or more, got {checkpoint_every!r}")
    dist = context()
    if not dist.is_main:
        log, progress = _quiet, None
    parallel = resolve_parallel(cfg.parallel)
    micro, accum = cfg.train.layout(dist.world_size)  # a batch that does not divide stops here, before any work
    cfg = with_default_lr(cfg)
    t0 = time.time()
    device = resolve_device(cfg.device)
    dist.on_main(prepare_output, output)
    if resume is not None:
        resume = dist.on_main(resuming.check_resumable, Path(resume), output)
        dist.on_main(resuming.hold_run_dir, resume)
        if dist.is_main:  # a run that failed (its connector) continues: the failure is no longer its state
            (resume / resuming.RUN_STATUS).unlink(missing_ok=True)
        finished = dist.on_main(resuming.finish_listed, resume, output, log)
        if finished is not None:
            return finished
    ws = workspace or Workspace(cfg.backbone, cfg.data, device, log, feature_cache)
    task = TASKS.get(cfg.task)

    # 1. the backbone, and the connector on it before any data loads: an option that cannot work with this
    #    backbone (perceiver heads not dividing its width) stops here, before the data and the run directory
    shape = dist.main_first(lambda: ws.backbone)
    build_connector(cfg.connector, shape.connector_context(), cfg.connector_args, cfg.train.init_seed)

    # 2. data and frozen vision features: the training splits of every training task, the evaluated task's
    #    evaluation split (one process per machine fills the caches, then the others read them)
    spent = dict(ws.seconds)
    backbone, train_splits, (eval_split, eval_feats) = dist.main_first(
        lambda: (
            ws.backbone,
            [ws.split(TASKS.get(name), "train", cfg.data) for name in cfg.train_tasks],
            ws.split(task, cfg.data.eval_split, cfg.data),
        )
    )
    spent = {f"{k}_seconds": round(ws.seconds[k] - spent[k], 2) for k in spent}  # 0 when already in memory
    sources = [TrainSource(TASKS.get(name), *pair) for name, pair in zip(cfg.train_tasks, train_splits)]
    _log_skipped(
        [(f"{src.task.name}/train", src.split) for src in sources]
        + [(f"{task.name}/{cfg.data.eval_split}", eval_split)],
        log,
    )

    # 3. the connector, with its own init seed, on a copy of the LLM where the LLM trains (the shared one stays
    #    pristine); its contract is checked on every patch count the run will feed it
    backbone = training_backbone(backbone, asdict(cfg.train))
    connector = build_connector(
        cfg.connector, backbone.connector_context(), cfg.connector_args, cfg.train.init_seed
    ).to(device)
    model = VLM(backbone, connector)
    _check_contract(model, [src.features for src in sources] + [eval_feats], device)
    key = training_key(cfg, asdict(connector.config), backbone.key, device, (dist.world_size, parallel.strategy))
    config = _config_record(cfg, backbone, connector, device, key, placement(parallel, dist, micro, accum))

    # 4. the run directory: a fresh one, or the interrupted run's own (same configuration only); rank 0 makes it
    run_dir = dist.on_main(resuming.open_run_dir, config, output, task.name, cfg, resume)
    if resume is None:
        dist.on_main(resuming.hold_run_dir, run_dir)
    log(f"run directory: {run_dir} (if interrupted, continue it with: {resuming.resume_command(run_dir)})")

    # 5. train (checkpointed, resumable), or re-use the weights of a finished run with the same training key
    model, stats = _train_or_reuse(
        model,
        sources,
        cfg,
        ws,
        output,
        reuse_from,
        run_dir,
        key,
        device,
        progress,
        log,
        checkpoint_every,
        dist,
        parallel,
    )

    # 6. evaluate (journaled, resumable)
    result, records = evaluate(
        model, task, eval_split, eval_feats, cfg.eval, device, progress, journal=run_dir / resuming.PREDICTIONS_JOURNAL
    )
    diag = eval_feats[:64]
    result["connector_diagnostics"] = model.connector.diagnostics(
        (diag.largest_group() if isinstance(diag, PatchBatch) else diag).to(device)
    )
    result["train_skipped"] = {
        "n": sum(len(src.split.skipped) for src in sources),
        "reasons": dict(sum((Counter(src.split.skip_counts()) for src in sources), Counter())),
    }
    result["train_tasks"] = cfg.train_tasks

    # 7. write: results.json last (it marks the run finished), then the leaderboard row; rank 0 only
    result |= (
        stats
        | spent
        | {
            "task": task.name,
            "connector": cfg.connector,
            "backbone_key": backbone.key,
            "wall_seconds": round(time.time() - t0, 2),
            "versions": versions(),
            "commit": git_commit(),
            "device": device,
            "machine": machine(),
        }
    )
    skipped = [{"split": f"{src.task.name}/train", **row} for src in sources for row in src.split.skipped] + [
        {"split": f"{task.name}/{cfg.data.eval_split}", **row} for row in eval_split.skipped
    ]
    dist.on_main(resuming.write_finished, run_dir, output, config, result, records, skipped)
    result["run_dir"] = str(run_dir)
    return result


def connector_options_of(cfg: RunConfig) -> dict:
    """The run's connector options, typed (`alignbench.connector.connector_options`)."""
    return connector_options(CONNECTORS.get(cfg.connector), cfg.connector_args)


def _log_skipped(splits: list, log) -> None:
    """One line per split whose loader left rows out (they are counted, never scored)."""
    for name, split in splits:
        if split.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in split.skip_counts().items())
            log(
                f"{name}: skipped {len(split.skipped)} of {len(split.skipped) + len(split.samples)} "
                f"questions ({reasons})"
            )


def _config_record(cfg: RunConfig, backbone, connector, device: str, key: str, spread: dict) -> dict:
    """What config.json holds: the configuration, and what it resolved to (the connector's whole configuration and
    token count, the dimensions, the backbone's key and source, the device, the training key, the placement)."""
    dims = {"vision_dim": backbone.vision_dim, "llm_dim": backbone.llm_dim, "num_patches": backbone.num_patches}
    tiled = backbone.max_patches != backbone.num_patches
    if tiled:
        dims["max_patches"] = backbone.max_patches
    return json.loads(
        json.dumps(
            asdict(cfg)
            | {
                "connector_config": asdict(connector.config),
                "connector_tokens": connector.num_tokens(backbone.num_patches),
                "dims": dims,
                "backbone_key": backbone.key,
                "resolved_device": device,
                **({"backbone_source": backbone.source} if backbone.source is not None else {}),
                "train_tasks": cfg.train_tasks,
                "training_key": key,
            }
            | ({"connector_tokens_max": connector.num_tokens(backbone.max_patches)} if tiled else {})
            | ({"plugins": loaded_plugins()} if loaded_plugins() else {})
            | {"distributed": spread}
        )
    )


def _train_or_reuse(
    model: VLM,
    sources: list[TrainSource],
    cfg: RunConfig,
    ws: Workspace,
    output: Path,
    reuse_from: list[Path],
    run_dir: Path,
    key: str,
    device: str,
    progress,
    log,
    checkpoint_every: int,
    dist,
    parallel,
) -> tuple[VLM, dict]:
    """Train the model (checkpointed, resumable), or load the weights of a finished run with the same training key
    (a sweep trains each connector once on its training tasks, then scores every task); either way the run
    directory gets the weights it evaluates and their curve. Rank 0 holds the lock and decides; every process
    trains or loads. Returns the model to evaluate and the training statistics."""
    with training_lock(output, key) if dist.is_main else nullcontext():
        trained_in = dist.on_main(trained_source, [output, *reuse_from], key, run_dir, cfg.train.stage)
        if trained_in is None:
            try:
                stats = train(
                    model,
                    sources,
                    cfg.train,
                    cfg.data.seed,
                    device,
                    progress,
                    log,
                    checkpoint_dir=run_dir,
                    checkpoint_every=checkpoint_every,
                    dist=dist,
                    parallel=parallel,
                )
            except TrainingDiverged as exc:
                if dist.is_main:
                    atomic_write(
                        run_dir / resuming.RUN_STATUS,
                        json.dumps(
                            {
                                "status": "diverged",
                                "step": exc.step,
                                "checkpoint_step": exc.checkpoint_step,
                                "message": str(exc),
                            },
                            indent=2,
                        ),
                    )
                raise
            if is_sharded(model.connector) or is_sharded(model.llm):  # FSDP: every process evaluates a whole model
                model = _gathered(model, ws, cfg, device)
            curve = stats.pop("curve")
            if dist.is_main:
                save_trained(run_dir, model, cfg.train.stage)
                atomic_write(run_dir / CURVE, curve_csv(curve))
                register_trained(output, key, run_dir, stats)
            return model, stats
        source = Path(trained_in["source"])
        load_reused(source, model, cfg.train.stage, device)
        log(
            f"re-using the weights trained in {trained_in['trained_in']} (same training configuration, key {key}); "
            "no training"
        )
        if dist.is_main:
            save_trained(run_dir, model, cfg.train.stage)
            source_curve = source / CURVE
            if source_curve.is_file():  # every run directory holds the curve of the weights it evaluates
                atomic_write(run_dir / CURVE, source_curve.read_text())
        return model, trained_in["stats"] | {"trained_in": trained_in["trained_in"]}


def _gathered(model: VLM, ws: Workspace, cfg: RunConfig, device: str) -> VLM:
    """The FSDP-trained model, whole on every process: fresh modules of the same architecture filled with the
    sharded ones' tensors (gathered one tensor at a time). Inference holds the model in far less memory than
    training needs for it, gradients and optimizer moments."""
    llm = model.llm
    if is_sharded(model.llm):
        llm = unshard_into(model.llm, copy.deepcopy(ws.backbone.llm).float())
    backbone = dataclasses.replace(ws.backbone, llm=llm)
    connector = build_connector(
        cfg.connector, backbone.connector_context(), cfg.connector_args, cfg.train.init_seed
    ).to(device)
    unshard_into(model.connector, connector)
    connector.on_llm_loaded(llm)
    return VLM(backbone, connector).eval()


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
