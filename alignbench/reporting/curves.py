"""The report's training-curve section: each evaluated run's `train_curve.csv` (`alignbench.train.tracking`)."""

from __future__ import annotations

from pathlib import Path

from ..train.tracking import CURVE, read_curve


def curves_section(runs_dir: Path, run_ids: dict, figures: Path, number: int = 10) -> list[str]:
    """The report's training-curve section: loss against step, one panel per connector, one line per seed (the
    curve each evaluated run holds). `run_ids` maps connector -> {seed: run id}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {
        c: {s: runs_dir / r / CURVE for s, r in seeds.items() if (runs_dir / r / CURVE).is_file()}
        for c, seeds in run_ids.items()
    }
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
    return [
        f"## {number}. Training curves",
        "",
        "Training loss per connector and seed, from each run's "
        "`train_curve.csv` (learning rates are in the same file; `--report-to tensorboard` streams them live).",
        "",
        "![training curves](figures/training_curves.png)",
        "",
    ]
