"""Sweep jobs in worker processes on one machine (`--jobs N`, the inline launcher): CPU sweeps use the cores
better as separate processes than as threads of one. Each worker keeps its workspace for its next job."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..config.run import RunConfig
from .pipeline import run
from .workspace import Workspace, quiet_libraries, resolve_device

# What a worker process keeps between its jobs (set by `_init_worker` when the pool starts it).
_WORKSPACE: Workspace | None = None
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
        _WORKSPACE = Workspace(
            cfg.backbone, cfg.data, resolve_device(cfg.device), log=lambda *a, **k: None, feature_cache=_FEATURE_CACHE
        )
    return run(cfg, output, _WORKSPACE, progress=None, log=lambda *a, **k: None, reuse_from=_REUSE_FROM)


def run_parallel(
    configs: list[RunConfig],
    output: Path,
    jobs: int,
    on_result=None,
    feature_cache: bool = True,
    reuse_from: Sequence[Path] = (),
) -> list[dict]:
    """Run sweep jobs in `jobs` processes of `cpu_count // jobs` threads each (CPU sweeps: small matrices
    use cores better as separate processes than as threads of one). Results come back in input order."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads, feature_cache, tuple(reuse_from))
    ) as pool:
        futures = [pool.submit(_run_in_worker, cfg, output) for cfg in configs]
        results = []
        for fut in futures:
            results.append(fut.result())
            if on_result:
                on_result(results[-1])
    return results
