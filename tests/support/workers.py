"""Process bodies for the concurrency tests (reliability/test_concurrency.py, integration/test_feature_cache.py).
Kept apart so that each spawned process imports only this module (its packages' `__init__` files import nothing heavy)
and alignbench.run.outputs, not torch and the test module."""

import json
import time
from pathlib import Path

from alignbench.run.leaderboard import append_leaderboard
from alignbench.run.outputs import new_run_dir


def append_rows(output: str, writer: int, rows: int, gate) -> None:
    gate.wait()
    for k in range(rows):
        append_leaderboard(
            Path(output),
            {
                "run_id": f"w{writer}-r{k}",
                "connector": "mlp",
                "task": "docvqa",
                "metric": "anls",
                "score": writer + k / 10,
                "per_split": json.dumps({"a": {"b": 1, "c": 2}}),
            },
        )


def read_continuously(output: str, stop, problems) -> None:
    """Read the leaderboard in a loop while others write it; report any read that is not a whole table."""
    import csv

    path = Path(output) / "leaderboard.csv"
    while not stop.is_set():
        time.sleep(0.001)
        if not path.exists():
            continue
        rows = list(csv.reader(path.read_text().splitlines()))
        if not rows or rows[0][0] != "run_id" or any(len(r) != len(rows[0]) for r in rows):
            problems.put(repr(rows[:3]))


def append_forever(output: str, writer: int, done) -> None:
    for k in range(10**6):
        append_leaderboard(
            Path(output),
            {"run_id": f"w{writer}-r{k}", "connector": "mlp", "task": "docvqa", "metric": "anls", "score": k},
        )
        done.put(f"w{writer}-r{k}")


def frozen_run_dir(output: str, gate, result) -> None:
    """new_run_dir with the clock and the random suffix frozen: every process asks for the very same name."""
    import alignbench.run.outputs as results

    results.time.strftime = lambda *a: "20260101-000000"
    results.secrets.token_hex = lambda n: "beef"
    gate.wait()
    result.put(new_run_dir(Path(output), "docvqa", "mlp", 0).name)


def pages(n: int, seed: int = 0) -> list:
    """n deterministic RGB pages the size of the tiny backbone's inputs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(n)]


def features_from_cache(cache: str, gate, result) -> None:
    """Ask the shared feature cache for the same features as the other processes, at the same moment."""
    import os

    from alignbench.backbones.tiny import load_tiny
    from alignbench.data.feature_cache import FeatureCache

    os.environ["ALIGNBENCH_CACHE"] = cache
    backbone = load_tiny(log=lambda *a: None)
    images = pages(6)
    cache_ = FeatureCache(Path(cache), log=lambda *a: None)
    gate.wait()
    features, _ = cache_.get(backbone, images)
    result.put((cache_.misses, features.sum().item(), features.numpy().tobytes().hex()[:64]))
