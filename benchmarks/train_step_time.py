"""Seconds per training step of the smollm2 recipe's two stages, per connector and LLM attention kernel.

    python benchmarks/train_step_time.py [--connectors mlp,align] [--attention auto,eager] [--steps 16]
                                         [--backbone smollm2] [--eval-questions 30] [--out DIR] [--stem NAME]
        -> results/bench/train_step_time_{backbone}.{json,md}   (or DIR/STEM.{json,md})

Each (connector, kernel) pair is one `alignbench run` of the backbone's recipe cut to --steps steps (the last half
in stage `lora`, as in the recipe's LLM stage), on the recipe's batch (8 pages, 2 questions each, transcription
mixed in), scored on --eval-questions DocVQA-like questions without the blind pass. A step's time is the
difference of consecutive `seconds` in the run's `train_curve.csv`; the first step of each stage is left out
(allocation and warm-up), the median of the rest is reported. Scoring time is the run's `eval_seconds`; the runs'
scores are not a result (a few steps), only a check that each kernel produced a working model.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from alignbench.run.outputs import machine

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(curve: Path, connector_steps: int) -> dict[str, list[float]]:
    """Each step's seconds from a run's train curve, by stage (connector: steps 1..connector_steps, then lora)."""
    rows = list(csv.DictReader(curve.open()))
    stages: dict[str, list[float]] = {"connector": [], "lora": []}
    previous = 0.0
    for row in rows:
        step, seconds = int(row["step"]), float(row["seconds"])
        stages["connector" if step <= connector_steps else "lora"].append(seconds - previous)
        previous = seconds
    return stages


def measure(connector: str, attention: str, args, tmp: Path) -> dict:
    out = tmp / f"{connector}-{attention}"
    llm_steps = args.steps // 2
    cmd = ["alignbench", "run", "--connector", connector, "--task", "docvqa", "--backbone", args.backbone]
    cmd += ["--stage", "lora", "--steps", str(args.steps), "--llm-steps", str(llm_steps), "--attention", attention]
    cmd += ["--eval-questions", str(args.eval_questions), "--no-blind", "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    run_dir = next((out / "runs").iterdir())
    result = json.loads((run_dir / "results.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    stages = step_seconds(run_dir / "train_curve.csv", args.steps - llm_steps)
    return {
        "connector": connector,
        "attention": attention,
        "run_attention": config["backbone"].get("attention", "auto"),  # what the run recorded it ran with
        "command": " ".join(c for c in cmd if not c.startswith(str(tmp)) and c != "--output"),
        **{f"{stage}_step_s": round(statistics.median(t[1:]), 3) for stage, t in stages.items()},
        "steps_timed": {stage: len(t) - 1 for stage, t in stages.items()},
        "train_seconds": result["train_seconds"],
        "eval_seconds": result["eval_seconds"],
        "eval_dtype": result.get("eval_dtype"),
        "score": result["score"],
    }


def markdown(rows: list[dict], report: dict) -> str:
    command = f"python benchmarks/train_step_time.py {report['argv']}".strip()
    lines = [
        f"# Seconds per training step, `{report['backbone']}` ({report['machine']['cpu']}, "
        f"{report['machine']['torch_threads']} threads)",
        "",
        f"`{command}`: the recipe cut to {report['steps']} steps "
        f"(half in each stage); median over each stage's steps after its first; scoring: "
        f"{report['eval_questions']} questions, no blind pass.",
        "",
        "| connector | attention | connector stage, s/step | LoRA stage, s/step | scoring, s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['connector']} | {r['attention']} | {r['connector_step_s']:.2f} | {r['lora_step_s']:.2f} | "
            f"{r['eval_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connectors", default="mlp,align")
    parser.add_argument("--attention", default="auto,eager", help="kernels to compare (comma-separated)")
    parser.add_argument("--steps", type=int, default=16, help="steps per run, half of them in stage lora")
    parser.add_argument("--backbone", default="smollm2")
    parser.add_argument("--eval-questions", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="folder for the two files")
    parser.add_argument("--stem", help="file name without extension (default: train_step_time_BACKBONE)")
    args = parser.parse_args()
    if args.steps < 4:
        sys.exit("--steps must be at least 4 (two steps per stage are needed to time one)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for connector in args.connectors.split(","):
            for attention in args.attention.split(","):
                rows.append(measure(connector, attention, args, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    report = {
        "argv": " ".join(sys.argv[1:]),
        "backbone": args.backbone,
        "steps": args.steps,
        "eval_questions": args.eval_questions,
        "runs": rows,
        "machine": machine(),
    }
    stem = args.out / (args.stem or f"train_step_time_{args.backbone}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, report))
    print(markdown(rows, report))


if __name__ == "__main__":
    main()
