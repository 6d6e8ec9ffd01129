"""Run directories: finding the one a command wrote, comparing two runs' weights and results, reading a run back with
pickle blocked, and output folders built from known per-question scores (for the report's statistics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SCORE_KEYS = ("metric", "score", "stderr", "n", "per_split", "blind", "n_skipped", "first_loss", "final_loss")


def only_run_dir(output: Path) -> Path:
    """The one run directory under OUTPUT/runs."""
    dirs = list((output / "runs").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max().item() <= atol, key


def assert_same_results(a: Path, b: Path) -> None:
    """Two run directories scored the same predictions the same way."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert {k: ra.get(k) for k in SCORE_KEYS} == {k: rb.get(k) for k in SCORE_KEYS}
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()


def _unpickling(*args, **kwargs):
    raise AssertionError("pickle/torch.load used to read a checkpoint")


def block_unpickling(monkeypatch) -> None:
    """Every way of unpickling (pickle, torch.load) fails for the rest of the test or monkeypatch context."""
    import pickle

    import torch

    for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, name, _unpickling)


def write_runs(folder: Path, runs: list[dict]) -> Path:
    """FOLDER as DocVQA runs leave it: RUN_DIR/predictions.jsonl per run and leaderboard.csv, from per-question scores.

    Each run: connector, seed, scores (one per question) and, where given, pages (each question's page index, written
    into its record) and finished (the leaderboard's time the run ended)."""
    rows = []
    for run in runs:
        scores = np.asarray(run["scores"], float)
        run_id = f"docvqa-{run['connector']}-s{run['seed']}-x"
        run_dir = folder / "runs" / run_id
        run_dir.mkdir(parents=True)
        pages = run.get("pages")
        records = [
            {
                "uid": f"q{i}",
                **({"page": int(pages[i])} if pages is not None else {}),
                "question": "?",
                "answers": ["a"],
                "prediction": "a",
                "score": float(s),
                "blind_prediction": "zzz",
            }
            for i, s in enumerate(scores)
        ]
        (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rows.append(
            {
                "run_id": run_id,
                **({"finished": run["finished"]} if "finished" in run else {}),
                "connector": run["connector"],
                "task": "docvqa",
                "seed": run["seed"],
                "metric": "anls",
                "score": float(scores.mean()),
                "stderr": 0.01,
                "n": scores.size,
                "blind_score": 0.0,
                "evaluator": "alignbench",
                "stage": "connector",
                "steps": 3,
                "backbone": "b",
            }
        )
    pd.DataFrame(rows).to_csv(folder / "leaderboard.csv", index=False)
    return folder
