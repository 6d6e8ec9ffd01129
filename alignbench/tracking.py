"""Training curves: every run keeps its loss and learning-rate curve in `RUN_DIR/train_curve.csv`, and
`--report-to tensorboard|wandb` streams the same rows live through accelerate's trackers (`none`, the default,
needs no extra package).

TensorBoard writes under `RUN_DIR/tensorboard/`; W&B logs to the project `alignbench` under the run's id
(W&B's own settings, e.g. `WANDB_MODE=offline`, apply).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

from .errors import AlignBenchError

REPORT_TO = ("none", "tensorboard", "wandb")
CURVE = "train_curve.csv"  # RUN_DIR/train_curve.csv: one row per training step
CURVE_FIELDS = ("step", "task", "loss", "lr", "llm_lr", "seconds")


def check_report_to(value: str) -> None:
    if value not in REPORT_TO:
        raise AlignBenchError(f"--report-to {value!r} is not one of {', '.join(REPORT_TO)}")
    for package in ("accelerate", value) if value != "none" else ():  # a tracker's package has the tracker's name
        if importlib.util.find_spec(package) is None:
            raise AlignBenchError(f"--report-to {value} needs the {package} package: pip install "
                                  f"'alignbench[track]' (or pip install {package}), or use --report-to none")


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


def curves_section(runs_dir: Path, run_ids: dict, figures: Path, number: int = 10) -> list[str]:
    """The report's training-curve section: loss against step, one panel per connector, one line per seed (the
    curve each evaluated run holds). `run_ids` maps connector -> {seed: run id}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {c: {s: runs_dir / r / CURVE for s, r in seeds.items() if (runs_dir / r / CURVE).is_file()}
              for c, seeds in run_ids.items()}
    curves = {c: found for c, found in curves.items() if found}
    if not curves:
        return [f"## {number}. Training curves", "", "No run here kept its curve (`RUN_DIR/train_curve.csv`).", ""]
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.8), sharey=True, squeeze=False)
    for ax, (connector, found) in zip(axes[0], curves.items()):
        for seed, path in sorted(found.items()):
            curve = read_curve(path)
            ax.plot(curve.step, curve.loss.rolling(10, min_periods=1).mean(), lw=1, label=f"seed {seed}")
        ax.set_title(connector, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss (mean of 10 steps)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(figures / "training_curves.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return [f"## {number}. Training curves", "", "Training loss per connector and seed, from each run's "
            "`train_curve.csv` (learning rates are in the same file; `--report-to tensorboard` streams them live).", "",
            "![training curves](figures/training_curves.png)", ""]
