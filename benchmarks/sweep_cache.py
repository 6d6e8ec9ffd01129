"""Wall time of the 4 x 3 embedded sweep with and without the shared vision-feature cache, and where it goes.

    python benchmarks/sweep_cache.py [--steps 250] [--jobs 2] [--conditions no-cache,cold,warm] [--train-tasks each]
                                     [--device auto|cpu|cuda] [--backbone tiny|smollm2] [--profile-steps 5]
                                     [--train-docs N --eval-questions N] [--out DIR] [--stem NAME]
        -> results/bench/sweep_cache.{json,md}     (other --steps: sweep_cache_steps{N}.{json,md})

The GPU's sweep wall time (the README's sweep, each connector trained once on the mixture):
    python benchmarks/sweep_cache.py --device cuda --steps 750 --conditions cold --train-tasks '' --profile-steps 0

The sweep is the README's 4 connectors x 3 tasks: `alignbench sweep --connectors mlp,perceiver,ovis,align
--tasks docvqa,infovqa,chartqa --jobs 2 --train-tasks each` (every default otherwise, --steps as given), i.e.
12 runs, each training on its own task: the workload of the recorded figures, measured before a sweep trained
each connector once on the mixture of its tasks by default (`--train-tasks ''` runs that default instead).
Each condition runs in a fresh output folder, all under one private $ALIGNBENCH_CACHE in which the embedded
datasets are generated first (untimed: every condition reads the same cached datasets, so the comparison
is about the vision features alone).
Conditions, in this order:
  no-cache  `--no-feature-cache`: every worker process runs the vision tower for each split it meets;
  cold      the feature cache empty: the first worker to need a split runs the tower, the other reads it;
  warm      the cache as the cold sweep left it (a repeated sweep, or a sweep after `tune`).
Figures per condition: the sweep's wall seconds and CPU seconds (its process and every worker), the
speed-up over no-cache, and the breakdown summed over the 12 runs' results.json (training, evaluation,
data loading, vision features, as each run's worker spent them).
The tables are compared between conditions (identical features give identical scores). Then a profile of
training steps per connector (connector forward, LLM forward, backward, optimizer) in this process, one
thread, which is where a sweep's time goes.

Bound. The cache saves vision-tower time only. From the no-cache sweep's own figures, a sweep whose tower cost
nothing would still take its wall time minus the workers' feature seconds spread over the jobs, so no cache
can make it faster than wall / (wall - features / jobs): the bound printed beside the bar.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONNECTORS = "mlp,perceiver,ovis,align"
TASKS = "docvqa,infovqa,chartqa"
BAR = 1.5  # no-cache wall / cached wall


def sweep_options(args) -> list[tuple[str, object, object]]:
    """(flag, value, default) of the options passed on to `alignbench sweep` when not at their default."""
    return [
        ("--device", args.device, "auto"),
        ("--backbone", args.backbone, "tiny"),
        ("--train-docs", args.train_docs, None),
        ("--eval-questions", args.eval_questions, None),
    ]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generate_data(
    cache: Path, backbone: str = "tiny", train_docs: int | None = None, eval_questions: int | None = None
) -> float:
    """The six embedded datasets, generated into `cache` before anything is timed (smollm2: its LLM converted
    from the GGUF too)."""
    os.environ["ALIGNBENCH_CACHE"] = str(cache)
    from alignbench.config.backbone import BackboneConfig
    from alignbench.config.data import DataConfig
    from alignbench.run.workspace import Workspace, quiet_libraries
    from alignbench.task import TASKS as REGISTRY

    quiet_libraries()
    t0 = time.time()
    sizes = {k: v for k, v in (("train_docs", train_docs), ("eval_questions", eval_questions)) if v is not None}
    ws = Workspace(BackboneConfig(backbone), DataConfig(**sizes), "cpu", log=lambda *a: None, feature_cache=False)
    for task in TASKS.split(","):
        for split in ("train", "eval"):
            ws.data(REGISTRY.get(task), split)
    return time.time() - t0


def run_sweep(condition: str, args, cache: Path, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "alignbench",
        "sweep",
        "--connectors",
        CONNECTORS,
        "--tasks",
        TASKS,
        "--jobs",
        str(args.jobs),
        "--steps",
        str(args.steps),
        "--output",
        str(out),
    ]
    if args.train_tasks:
        cmd += ["--train-tasks", args.train_tasks]
    for flag, value, default in sweep_options(args):
        if value != default:
            cmd += [flag, str(value)]
    if condition == "no-cache":
        cmd.append("--no-feature-cache")
    if condition == "cold":
        shutil.rmtree(cache / "features", ignore_errors=True)
    env = {**os.environ, "ALIGNBENCH_CACHE": str(cache), "COLUMNS": "200"}
    load0, cpu0, t0 = os.getloadavg()[0], children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode != 0:
        sys.exit(f"{condition} sweep failed:\n{proc.stderr[-3000:]}")
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/results.json"))]
    # A run that re-used another run's training (`trained_in`) reports that training's seconds: count it once.
    phases = {
        k: round(sum(r.get(f"{k}_seconds", 0.0) for r in runs if k != "train" or not r.get("trained_in")), 1)
        for k in ("train", "eval", "data", "features")
    }
    return {
        "condition": condition,
        "command": " ".join(["alignbench", *cmd[3:]]).replace(str(out), "OUT"),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "runs": len(runs),
        "phases_summed_over_runs_s": phases,
        "runs_wall_summed_s": round(sum(r["wall_seconds"] for r in runs), 1),
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "table": (out / "table.csv").read_text(),
        "table_md": (out / "table.md").read_text(),
    }


def profile_training(steps: int) -> dict:
    """Seconds per training step of each connector on docvqa, split into its parts (one thread)."""
    import torch

    from alignbench.config.backbone import BackboneConfig
    from alignbench.config.data import DataConfig
    from alignbench.config.train import TrainConfig
    from alignbench.connector import CONNECTORS as REGISTRY
    from alignbench.connector import ConnectorContext, build_connector
    from alignbench.data.batches import BatchOrder, collate, pages
    from alignbench.model.vlm import VLM
    from alignbench.run.workspace import Workspace
    from alignbench.task import TASKS as TASK_REGISTRY

    torch.set_num_threads(1)
    ws = Workspace(BackboneConfig(), DataConfig(), "cpu", log=lambda *a: None)
    task = TASK_REGISTRY.get("docvqa")
    split, feats = ws.split(task, "train")
    backbone, cfg = ws.backbone, TrainConfig()
    groups = pages(split, cfg.questions_per_page)
    out = {}
    for name in CONNECTORS.split(","):
        ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
        model = VLM(backbone, build_connector(name, ctx, {}, cfg.init_seed))
        model.llm.requires_grad_(False)
        opt = torch.optim.AdamW(model.connector.parameters(), lr=REGISTRY.get(name).default_lr)
        order = BatchOrder(len(groups), cfg.batch_size, 0)
        parts: dict[str, list[float]] = {
            k: [] for k in ("collate", "connector_forward", "llm_forward_and_loss", "backward", "optimizer")
        }
        for step in range(steps + 1):  # the first step is a warm-up
            t0 = time.perf_counter()
            chosen = [[split.samples[i] for i in groups[k]] for k in order.next()]
            ids, mask, labels = collate(model.tokenizer, task, chosen)
            f = feats[[page[0].image for page in chosen]]
            t1 = time.perf_counter()
            model.connector(f)  # timed alone; the loss below runs it again
            t2 = time.perf_counter()
            loss = model.loss(f, ids, mask, labels)
            t3 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t4 = time.perf_counter()
            opt.step()
            t5 = time.perf_counter()
            if step:
                for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2 - (t2 - t1), t4 - t3, t5 - t4)):
                    parts[k].append(v)
        out[name] = {k: round(statistics.median(v), 4) for k, v in parts.items()}
        out[name]["tokens_per_step"] = int(mask.numel() + len(chosen) * backbone.num_patches)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--conditions", default="no-cache,cold,warm")
    parser.add_argument("--train-tasks", default="each", help="the sweep's --train-tasks ('': its default)")
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=5,
        help="training steps profiled per connector (CPU, one thread; 0: no profile)",
    )
    parser.add_argument("--keep", type=Path, help="keep the sweeps' outputs and cache here (default: a temp dir)")
    parser.add_argument("--device", default="auto", help="the sweep's --device: auto, cpu or cuda")
    parser.add_argument("--backbone", default="tiny", help="the sweep's --backbone: tiny or smollm2")
    parser.add_argument("--train-docs", type=int, help="the sweep's --train-docs (default: its own)")
    parser.add_argument("--eval-questions", type=int, help="the sweep's --eval-questions (default: its own)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="folder for the JSON and Markdown")
    parser.add_argument("--stem", help="file name without extension (default: sweep_cache[_steps{N}])")
    args = parser.parse_args()
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = set(conditions) - {"no-cache", "cold", "warm"}
    if unknown or not conditions:
        parser.error(f"--conditions {args.conditions!r}: use a comma-separated list of no-cache, cold, warm")
    if args.steps < 1 or args.jobs < 1:
        parser.error("--steps and --jobs must be at least 1")
    if args.backbone not in ("tiny", "smollm2"):
        parser.error(f"--backbone {args.backbone!r}: the sweep's embedded backbones are tiny and smollm2")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")

    from alignbench.run.outputs import machine

    work = args.keep or Path(tempfile.mkdtemp(prefix="sweep-cache-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    print(f"working in {work}", flush=True)
    data_s = generate_data(cache, args.backbone, args.train_docs, args.eval_questions)
    print(f"datasets generated in {data_s:.0f} s (not timed below)", flush=True)
    rows = []
    for condition in conditions:
        out = work / condition
        shutil.rmtree(out, ignore_errors=True)
        row = run_sweep(condition, args, cache, out)
        rows.append(row)
        print(
            f"{condition}: wall {row['wall_s']:.0f} s, CPU {row['cpu_s']:.0f} s, "
            f"phases {row['phases_summed_over_runs_s']}",
            flush=True,
        )
    base = next((r for r in rows if r["condition"] == "no-cache"), None)
    for r in rows:
        if base:
            r["speedup_wall"] = round(base["wall_s"] / r["wall_s"], 3)
            r["speedup_cpu"] = round(base["cpu_s"] / r["cpu_s"], 3)
        r["same_table_as_no_cache"] = base is not None and r["table"] == base["table"]
    profile = {}
    if args.profile_steps > 0:
        print("profiling training steps ...", flush=True)
        profile = profile_training(args.profile_steps)

    bound = None
    if base:  # were the tower free: the workers' feature seconds leave the sweep, spread over the jobs
        saved = base["phases_summed_over_runs_s"]["features"] / args.jobs
        bound = round(base["wall_s"] / max(base["wall_s"] - saved, 1e-9), 3)
    cached = [r for r in rows if r["condition"] != "no-cache" and "speedup_wall" in r]
    verdict = {r["condition"]: ("met" if r["speedup_wall"] >= BAR else "NOT met") for r in cached}
    command = f"python benchmarks/sweep_cache.py --steps {args.steps} --jobs {args.jobs} --conditions {args.conditions}"
    if args.train_tasks != "each":
        command += " --train-tasks " + (args.train_tasks or "''")
    for flag, value, default in [*sweep_options(args), ("--profile-steps", args.profile_steps, 5)]:
        command += f" {flag} {value}" if value != default else ""
    report = {
        "command": command,
        "steps": args.steps,
        "jobs": args.jobs,
        "datasets_generation_s": round(data_s, 1),
        "device": args.device,
        "backbone": args.backbone,
        "bar": {"speedup_at_least": BAR, "verdict": verdict, "bound_speedup_free_tower": bound},
        "rows": rows,
        "training_step_profile_s": profile,
        "machine": machine(),
        "timing": "wall: the sweep command, start to exit; cpu: user + system seconds of the sweep process and "
        "its workers; phases: each run's results.json (train_seconds, eval_seconds, data_seconds, "
        "features_seconds: what that run's worker spent, 0 when its workspace already held them)",
    }

    header = [
        "condition",
        "wall s",
        "CPU s",
        "speed-up (wall)",
        "speed-up (CPU)",
        "train s",
        "eval s",
        "features s",
        "data s",
        "same table",
    ]
    lines = []
    for r in rows:
        p = r["phases_summed_over_runs_s"]
        lines.append(
            [
                r["condition"],
                f"{r['wall_s']:.0f}",
                f"{r['cpu_s']:.0f}",
                f"{r.get('speedup_wall', 1):.2f}",
                f"{r.get('speedup_cpu', 1):.2f}",
                f"{p['train']:.0f}",
                f"{p['eval']:.0f}",
                f"{p['features']:.1f}",
                f"{p['data']:.1f}",
                str(r["same_table_as_no_cache"]),
            ]
        )
    m = report["machine"]
    md = [
        "# Sweep wall time with and without the shared vision-feature cache\n",
        f"`{command}`\n",
        f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores, torch threads {m.get('torch_threads')}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; the sweep's device: {args.device}, backbone "
        f"{args.backbone}; "
        f"1-minute load average before/after each sweep: "
        + "; ".join(f"{r['condition']} {r['loadavg_1min']}" for r in rows)
        + ".\n",
        f"4 connectors x 3 tasks, {args.steps} training steps each, --jobs {args.jobs}"
        + (", each connector trained once on the mixture of the three tasks" if not args.train_tasks else "")
        + ". Datasets generated "
        f"beforehand ({data_s:.0f} s, untimed). Phases are summed over the 12 runs (seconds of each run's worker; "
        "a training re-used by several runs counted once).\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    md += [
        "",
        f"Bar: the cached sweep at least {BAR}x faster (wall): "
        + (", ".join(f"{k} {v}" for k, v in verdict.items()) or "not measured (no no-cache sweep)")
        + "."
        + (
            f" Bound: were the vision tower free, the no-cache sweep would be at most {bound:.2f}x faster "
            f"(wall / (wall - features s / jobs))."
            if bound
            else ""
        ),
    ]
    if profile:
        md += [
            "",
            "Training step, median seconds (one thread, docvqa, 16 pages per step):",
            "",
            "| connector | tokens per step | collate | connector forward | LLM forward + loss | backward | optimizer |",
            "|---|---|---|---|---|---|---|",
        ]
        md += [
            f"| {name} | {p['tokens_per_step']} | {p['collate']:.3f} | {p['connector_forward']:.3f} | "
            f"{p['llm_forward_and_loss']:.3f} | {p['backward']:.3f} | {p['optimizer']:.3f} |"
            for name, p in profile.items()
        ]
    md += ["", f"The table of the {rows[0]['condition']} sweep:", "", rows[0]["table_md"].strip()]
    stem = args.stem or ("sweep_cache" if args.steps == 250 else f"sweep_cache_steps{args.steps}")
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
