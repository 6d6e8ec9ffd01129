"""`alignbench cost`: what each connector costs on one backbone (AlignVLM's Table 7, extended).

For every connector, on the same backbone, data and batch:

- parameters (the connector's own; ALIGN reads the LLM's embedding matrix, which is not counted again);
- visual tokens per page, and per tiled page (`tiles` tiles and the thumbnail, as `--max-tiles` makes them);
- connector FLOPs per page and per tiled page (forward; `torch.utils.flop_counter`, matrix products and
  convolutions);
- training seconds per step (the connector stage of the real training loop on the task's training pages, the
  backbone recipe's batch, after one warm-up step);
- evaluation seconds per sample and generated tokens per second (greedy decoding, the task's prompt and
  limits, the evaluation batch size of a run);
- peak memory: on a GPU the peak allocated by torch; on the CPU the peak resident memory of a process that
  loads the backbone, trains and evaluates the connector (each connector is measured in a fresh process).

The table is written to `OUTPUT/cost.csv` and `OUTPUT/cost.md` with the machine that measured it;
`alignbench report` includes it and plots score against visual tokens and cost.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ..config.cost import CostConfig
from ..errors import AlignBenchError
from ..io import atomic_write
from ..run.outputs import machine
from .tables import markdown_table

COST_CSV, COST_MD, COST_JSON = "cost.csv", "cost.md", "cost.json"
COLUMNS = {  # column -> header in the Markdown table
    "connector": "connector",
    "params": "parameters",
    "tokens_page": "visual tokens / page",
    "tokens_tiled": "visual tokens / tiled page",
    "gflops_page": "connector GFLOPs / page",
    "gflops_tiled": "connector GFLOPs / tiled page",
    "train_s_step": "train s / step",
    "eval_s_sample": "eval s / sample",
    "eval_tokens_s": "generated tokens / s",
    "peak_mib": "peak memory MiB",
}

FORMATS = ("", ",.0f", ".0f", ".0f", ".3g", ".3g", ".3g", ".3g", ".0f", ".0f")  # per column of COLUMNS


def measure_costs(cfg: CostConfig, output: Path, log=print):
    """Measure every connector of `cfg` (each in a fresh process), write OUTPUT/cost.{csv,md,json}; the table."""
    import pandas as pd

    cfg.validate()
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in cfg.connectors:
        log(f"measuring {name} on {cfg.backbone} ({cfg.task})")
        # A fresh process per connector: its peak memory is its own, and nothing one leaves behind slows the next.
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            try:
                rows.append(pool.submit(_measure_one, name, dataclasses.asdict(cfg)).result())
            except AlignBenchError:
                raise
            except Exception as exc:  # the measuring process failed: one line naming the connector, nothing written
                raise AlignBenchError(
                    f"measuring the cost of {name!r} failed ({type(exc).__name__}: {exc}); no cost table was written"
                ) from None
    devices = {row.pop("_device") for row in rows}
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = {
        "command_config": dataclasses.asdict(cfg),
        "machine": machine(),
        "device": ", ".join(sorted(devices)),
        "measured": time.strftime("%Y-%m-%d"),
    }
    atomic_write(output / COST_CSV, table.to_csv(index=False))
    atomic_write(output / COST_JSON, json.dumps(meta, indent=2))
    atomic_write(output / COST_MD, cost_markdown(table, meta))
    return table


def cost_markdown(table, meta: dict) -> str:
    cfg, where = meta["command_config"], meta["machine"]
    device = (
        where.get("gpu")
        or f"{where.get('cpu')} ({where.get('cpu_count')} cores, {where.get('torch_threads')} torch threads)"
    )
    head = (
        f"Connector cost on the `{cfg['backbone']}` backbone ({cfg['task']} pages), measured on {device}, "
        f"torch {where.get('torch')}, {meta.get('measured')}. Tiled page: {cfg['tiles']} tiles + a thumbnail. "
        f"Training: the connector stage, {cfg['train_steps']} timed steps; evaluation: {cfg['eval_samples']} "
        "questions, greedy. Peak memory: "
        + (
            "torch's peak allocation on the GPU."
            if where.get("gpu")
            else "the peak resident memory of the measuring process (backbone, training, evaluation)."
        )
    )
    shown = table.rename(columns=COLUMNS)
    return head + "\n\n" + markdown_table(shown, floatfmt=FORMATS) + "\n"


def _measure_one(name: str, cfg_dict: dict) -> dict:
    """One connector's row, measured in this (fresh) process."""
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..config.backbone import BackboneConfig
    from ..config.data import DataConfig
    from ..config.eval import EvalConfig
    from ..config.train import TrainConfig
    from ..connector import build_connector
    from ..evaluate import evaluate
    from ..model.vlm import VLM
    from ..run.workspace import Workspace, quiet_libraries, resolve_device
    from ..task import TASKS
    from ..train.loop import TrainSource, train
    from ..train.recipes import RECIPES

    quiet_libraries()
    cfg = CostConfig(**cfg_dict)
    device = resolve_device(cfg.device)
    cuda = device.startswith("cuda")
    recipe = RECIPES.get(cfg.backbone, {})
    task = TASKS.get(cfg.task)
    data = DataConfig(eval_limit=cfg.eval_samples)
    ws = Workspace(BackboneConfig(cfg.backbone), data, device, log=lambda *a, **k: None)
    backbone = ws.backbone
    connector = build_connector(name, backbone.connector_context(), cfg.connector_args.get(name)).to(device)
    n, tiled = backbone.num_patches, backbone.num_patches * (cfg.tiles + 1)
    row = {
        "connector": name,
        "params": sum(p.numel() for p in connector.parameters()),
        "tokens_page": connector.num_tokens(n),
        "tokens_tiled": connector.num_tokens(tiled),
    }
    for key, patches in (("gflops_page", n), ("gflops_tiled", tiled)):
        feats = torch.randn(1, patches, backbone.vision_dim, device=device)
        with FlopCounterMode(display=False) as counter:  # (its module tracker needs autograd on: no no_grad)
            connector(feats)
        row[key] = counter.get_total_flops() / 1e9
    split, feats = ws.split(task, "train", data)
    steps = cfg.train_steps + 1
    train_cfg = TrainConfig(
        steps=steps,
        warmup_steps=1,
        lr=connector.default_lr,
        batch_size=recipe.get("batch_size", TrainConfig.batch_size),
        questions_per_page=recipe.get("questions_per_page", TrainConfig.questions_per_page),
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model = VLM(backbone, connector)
    stats = train(model, [TrainSource(task, split, feats)], train_cfg, data.seed, device, log=lambda *a, **k: None)
    curve = stats["curve"]
    durations = [b["seconds"] - a["seconds"] for a, b in zip(curve, curve[1:])]  # the steps after the first
    row["train_s_step"] = statistics.median(durations)  # the median: robust to one step slowed by the machine
    eval_split, eval_feats = ws.split(task, data.eval_split, data)
    t0 = time.time()
    _, records = evaluate(model, task, eval_split, eval_feats, EvalConfig(blind=False), device)
    seconds = time.time() - t0
    generated = sum(len(backbone.tokenizer(r["prediction"], add_special_tokens=False).input_ids) + 1 for r in records)
    row["eval_s_sample"] = seconds / max(1, len(records))
    row["eval_tokens_s"] = generated / seconds if seconds > 0 else float("nan")
    if cuda:
        row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # Linux reports the peak resident set in KiB
        row["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["_device"] = device
    return row


def read_cost(runs: Path):
    """(table, meta) of `RUNS/cost.csv` and `cost.json`, or None when the directory has no cost table."""
    import pandas as pd

    path = runs / COST_CSV
    if not path.is_file():
        return None
    meta_path = runs / COST_JSON
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return pd.read_csv(path), meta


def cost_section(runs: Path, figures: Path, means: dict, tasks: list[str], number: int = 9) -> list[str]:
    """The report's cost section: the table measured under RUNS and score against visual tokens and training
    time (one panel per task). `means` maps (connector, task) to the mean score (0..1). Nothing when RUNS has
    no cost table (`alignbench cost --output RUNS` makes one)."""
    found = read_cost(runs)
    if found is None:
        return [
            f"## {number}. Cost",
            "",
            f"No cost table under `{runs}`; `alignbench cost --output {runs}` measures one.",
            "",
        ]
    table, meta = found
    lines = [
        f"## {number}. Cost: what each connector spends, and what it buys",
        "",
        cost_markdown(table, meta) if meta else markdown_table_of(table),
        "",
        "Produced by `alignbench cost` (see `cost.json` for its options and machine).",
    ]
    shown = [t for t in tasks if any((c, t) in means for c in table.connector)]
    if shown:
        _tradeoff_plot(table, means, shown, figures / "cost_tradeoff.png")
        lines += [
            "",
            "Score against visual tokens per page (left of each pair) and training seconds per step (right): "
            "up and to the left is better.",
            "",
            "![cost](figures/cost_tradeoff.png)",
        ]
    return lines + [""]


def markdown_table_of(table) -> str:
    return markdown_table(table.rename(columns=COLUMNS), floatfmt=FORMATS)


def _tradeoff_plot(table, means: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), 2, figsize=(9, 3.2 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for ax, column, label in (
            (row[0], "tokens_page", "visual tokens / page"),
            (row[1], "train_s_step", "train s / step"),
        ):
            for _, r in table.iterrows():
                if (r.connector, task) not in means:
                    continue
                y = 100 * means[(r.connector, task)]
                ax.scatter(r[column], y)
                ax.annotate(r.connector, (r[column], y), textcoords="offset points", xytext=(4, 3), fontsize=8)
            ax.set_xlabel(label)
            ax.set_ylabel(f"{task} score")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: the same runs, the same bytes
    plt.close(fig)
