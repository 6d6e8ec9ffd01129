"""Training curves: every run keeps its loss and learning-rate curve in `RUN_DIR/train_curve.csv`, and
`--report-to tensorboard|wandb` streams the same rows live through accelerate's trackers (`none`, the default,
needs no extra package).

TensorBoard writes under `RUN_DIR/tensorboard/`; W&B logs to the project `alignbench` under the run's id
(W&B's own settings, e.g. `WANDB_MODE=offline`, apply).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..config.train import check_report_to

CURVE = "train_curve.csv"  # RUN_DIR/train_curve.csv: one row per training step
CURVE_FIELDS = ("step", "task", "loss", "lr", "llm_lr", "seconds")


def open_tracker(kind: str, run_dir: Path, hparams: dict):
    """A started accelerate tracker for `kind` (None for "none"), with the run's options as hyper-parameters."""
    check_report_to(kind)
    if kind == "none":
        return None
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    if kind == "tensorboard":
        tracker = TensorBoardTracker("tensorboard", run_dir)  # RUN_DIR/tensorboard: `tensorboard --logdir OUTPUT/runs`
    else:
        tracker = WandBTracker("alignbench", name=run_dir.name, dir=str(run_dir))
    tracker.start()
    tracker.store_init_configuration(_flat(hparams))
    return tracker


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested options as flat `a.b` keys with values trackers accept (bool, int, float, str)."""
    out: dict = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def curve_csv(rows: list[dict]) -> str:
    """The curve as CSV text (empty cells where a value does not apply, e.g. the LLM's lr in stage connector)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CURVE_FIELDS})
    return buf.getvalue()


def read_curve(path: Path):
    """A run's curve as a DataFrame (step, task, loss, lr, llm_lr, seconds)."""
    import pandas as pd

    return pd.read_csv(path)
