"""One process against N processes on the same device: the same predictions, and the measured scaling.

    python benchmarks/process_scaling.py [--device cuda] [--nproc 2] [--steps 200] [--checkpoint RUN_DIR]
                                         [--limit N] [--train-docs N --eval-questions N --batch-size N]
                                         [--out DIR] [--stem NAME]
        -> results/bench/process_scaling_{device}.{json,md}

Two workloads, each launched as a user launches it, first as one process, then as `torchrun --standalone
--nproc-per-node N` with the same arguments:
  run    `alignbench run --connector mlp --task docvqa --steps S`: training, then the evaluation;
  eval   `alignbench eval --checkpoint RUN_DIR` (default: the one-process run above): its evaluation questions
         and their blind baseline.
N processes on one GPU share it: gloo carries their collectives (NCCL refuses two ranks on one device), so on
one GPU this checks the several-process code path on CUDA and measures what sharing the device costs or gains;
it is not the speed-up of N GPUs.
Compared: predictions.jsonl line by line; score, n and blind score; for `run` the trained connector's largest
weight difference and the final loss. Timed: each command's wall seconds (process start-up, backbone, data
and vision features included; the one-process command runs first and fills the feature cache that the
N-process one reads) and the run's own train_seconds and eval_seconds (results.json), which leave those out.
Scaling = one process's seconds / N processes' seconds (above 1: N processes are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(args: list[str], nproc: int, out: Path) -> dict:
    """One command (one process, or torchrun of `nproc`), timed; its run directory's results and predictions."""
    prefix = [sys.executable, "-m", "alignbench"]
    if nproc > 1:
        prefix = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "alignbench",
        ]
    cmd = [*prefix, *args, "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - t0
    shown = " ".join(
        ["alignbench" if nproc == 1 else f"torchrun --standalone --nproc-per-node {nproc} -m alignbench", *args]
    )
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        sys.exit(
            f"process_scaling: `{shown}` failed (exit code {proc.returncode}): "
            f"{(errors or lines or ['no output'])[-1].strip()}"
        )
    runs = sorted((out / "runs").iterdir())
    if len(runs) != 1:
        sys.exit(f"process_scaling: `{shown}` left {len(runs)} run directories in {out / 'runs'}, expected 1")
    result = json.loads((runs[0] / "results.json").read_text())
    return {
        "command": shown,
        "wall_s": round(wall, 2),
        "run_dir": runs[0],
        "train_s": result.get("train_seconds"),
        "eval_s": result.get("eval_seconds"),
        "score": result["score"],
        "n": result["n"],
        "blind": (result.get("blind") or {}).get("score"),
        "distributed": result.get("distributed"),
        "final_loss": result.get("final_loss"),
        "predictions": (runs[0] / "predictions.jsonl").read_text().splitlines(),
    }


def max_weight_diff(a: Path, b: Path) -> float | None:
    from safetensors.torch import load_file

    if not (a / "connector.safetensors").exists() or not (b / "connector.safetensors").exists():
        return None
    wa, wb = load_file(str(a / "connector.safetensors")), load_file(str(b / "connector.safetensors"))
    if wa.keys() != wb.keys():
        return float("inf")
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def compare(one: dict, many: dict) -> dict:
    different = sum(x != y for x, y in zip(one["predictions"], many["predictions"]))
    different += abs(len(one["predictions"]) - len(many["predictions"]))

    def ratio(key: str) -> float | None:
        return round(one[key] / many[key], 3) if one.get(key) and many.get(key) else None

    row = {
        "same_predictions": different == 0,
        "n_different": different,
        "n_predictions": len(one["predictions"]),
        "same_scores": (one["score"], one["n"], one["blind"]) == (many["score"], many["n"], many["blind"]),
        "scaling_wall": ratio("wall_s"),
        "scaling_train": ratio("train_s"),
        "scaling_eval": ratio("eval_s"),
        "max_connector_weight_diff": max_weight_diff(one["run_dir"], many["run_dir"]),
    }
    for side, r in (("one_process", one), ("n_processes", many)):
        row[side] = {k: v for k, v in r.items() if k not in ("predictions", "run_dir")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun launch (default: 2)")
    parser.add_argument("--steps", type=int, default=200, help="training steps of the `run` workload")
    parser.add_argument("--batch-size", type=int, default=16, help="pages per step, all processes together")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="the run directory `eval` re-evaluates (default: the one-process `run` workload's)",
    )
    parser.add_argument("--limit", type=int, help="evaluate a seeded subset of N questions (both workloads)")
    parser.add_argument("--train-docs", type=int, help="pages of the embedded train split (`run`)")
    parser.add_argument("--eval-questions", type=int, help="questions of the embedded evaluation split (`run`)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="folder for the JSON and Markdown")
    parser.add_argument("--stem", help="file name without extension (default: process_scaling_{device})")
    parser.add_argument("--keep", type=Path, help="keep the run directories here (default: a temp dir, removed)")
    args = parser.parse_args()
    if args.nproc < 2 or args.steps < 1:
        parser.error("--nproc must be at least 2 and --steps at least 1")
    if args.batch_size % args.nproc:
        parser.error(f"--batch-size {args.batch_size} does not divide over {args.nproc} processes")
    if args.checkpoint and not (args.checkpoint / "config.json").is_file():
        parser.error(f"--checkpoint {args.checkpoint}: not a run directory (no config.json)")

    import torch

    from alignbench.run.outputs import machine

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    limit = ["--limit", str(args.limit)] if args.limit else []
    sizes = [
        f
        for flag, v in (("--train-docs", args.train_docs), ("--eval-questions", args.eval_questions))
        if v is not None
        for f in (flag, str(v))
    ]
    workloads = {
        "run": [
            "run",
            "--connector",
            "mlp",
            "--task",
            "docvqa",
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--device",
            args.device,
            "--checkpoint-every",
            "0",
            *sizes,
            *limit,
        ],
        "eval": ["eval", "--checkpoint", "CHECKPOINT", "--device", args.device, *limit],
    }
    work = args.keep or Path(tempfile.mkdtemp(prefix="process-scaling-"))
    rows, checkpoint = {}, args.checkpoint
    for name, argv in workloads.items():
        argv = [str(checkpoint) if a == "CHECKPOINT" else a for a in argv]
        one = launch(argv, 1, work / f"{name}-1")
        checkpoint = checkpoint or one["run_dir"]
        print(f"{name}, 1 process: {one['wall_s']:.1f} s", flush=True)
        many = launch(argv, args.nproc, work / f"{name}-{args.nproc}")
        print(f"{name}, {args.nproc} processes: {many['wall_s']:.1f} s", flush=True)
        rows[name] = compare(one, many)
        print(
            f"{name}: same predictions {rows[name]['same_predictions']}, scaling (wall) {rows[name]['scaling_wall']}",
            flush=True,
        )

    m = machine()
    command = f"python benchmarks/process_scaling.py --device {args.device} --nproc {args.nproc} --steps {args.steps}"
    command += f" --batch-size {args.batch_size}" if args.batch_size != 16 else ""
    if args.checkpoint:
        given = args.checkpoint.resolve()
        command += f" --checkpoint {given.relative_to(ROOT) if given.is_relative_to(ROOT) else given}"
    command += (f" --limit {args.limit}" if args.limit else "") + "".join(f" {x}" for x in sizes)
    report = {
        "command": command,
        "device": args.device,
        "nproc": args.nproc,
        "workloads": rows,
        "machine": m,
        "timing": __doc__.split("Timed: ")[1].split("Scaling")[0].strip().replace("\n", " "),
    }
    where = f"GPU {m['gpu']}" if args.device.startswith("cuda") else f"CPU {m['cpu']}"

    def num(x, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    md = [
        "# One process against several on the same device\n",
        f"`{command}`\n",
        f"Machine: {where}, {m['cpu_count']} cores, torch {m['torch']}.\n",
        "| workload | processes | wall s | train s | eval s | score | n | blind |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        for side, nproc in (("one_process", 1), ("n_processes", args.nproc)):
            x = r[side]
            md.append(
                f"| {name} | {nproc} | {x['wall_s']:.1f} | {num(x['train_s'], '.1f')} | {num(x['eval_s'], '.1f')}"
                f" | {num(x['score'], '.4f')} | {x['n']} | {num(x['blind'], '.4f')} |"
            )
    md += [
        "",
        "| workload | same predictions | different | same scores | max connector weight diff | scaling (wall) | "
        "scaling (train s) | scaling (eval s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {name} | {r['same_predictions']} | {r['n_different']} of {r['n_predictions']} | {r['same_scores']} | "
        f"{num(r['max_connector_weight_diff'], '.2e')} | {num(r['scaling_wall'], '.2f')} | "
        f"{num(r['scaling_train'], '.2f')} | {num(r['scaling_eval'], '.2f')} |"
        for name, r in rows.items()
    ]
    md += ["", "Scaling = one process's seconds / N processes' seconds. Timed: " + report["timing"]]
    stem = args.stem or f"process_scaling_{args.device.split(':')[0]}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
