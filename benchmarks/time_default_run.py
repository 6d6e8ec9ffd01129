"""Wall time of the README's first command on this machine, as on a fresh machine.

A fresh cache folder means the embedded datasets are generated inside the timed run (the prepared tiny backbone
and the smollm2 tower ship with the package; smollm2's LLM is converted from its GGUF inside the timed run).
Writes results/bench/default_run_CONNECTOR_TASK[_BACKBONE][_ATTENTION].json.

    python benchmarks/time_default_run.py [--connector align --task docvqa] [--backbone tiny|smollm2]
                                          [--attention auto|eager|sdpa]   (auto: the command as a user types it)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignbench.run.outputs import machine

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser()
parser.add_argument("--connector", default="align")
parser.add_argument("--task", default="docvqa")
parser.add_argument("--backbone", default="tiny")
parser.add_argument("--attention", default="auto", help="the run's --attention (auto: the option left out)")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    cmd = ["alignbench", "run", "--connector", args.connector, "--task", args.task, "--output", f"{tmp}/out"]
    cmd += ["--backbone", args.backbone] if args.backbone != "tiny" else []
    cmd += ["--attention", args.attention] if args.attention != "auto" else []
    env = {**os.environ, "ALIGNBENCH_CACHE": f"{tmp}/cache"}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed: {proc.stderr}")
    run_dir = next(Path(f"{tmp}/out/runs").iterdir())
    result = json.loads((run_dir / "results.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    train_cfg = config["train"]

report = {
    "command": " ".join(c for c in cmd if not c.startswith(tmp) and c != "--output"),
    "fresh_cache": True,
    "train": train_cfg,
    "attention": config["backbone"].get("attention", "auto"),  # the LLM's attention kernel, as the run recorded it
    "wall_seconds": round(wall, 1),
    "score": result["score"],
    "stderr": result["stderr"],
    "n": result["n"],
    "blind_score": result["blind"]["score"],
    "train_seconds": result["train_seconds"],
    "eval_seconds": result["eval_seconds"],
    "eval_dtype": result.get("eval_dtype"),  # the LLM's precision while scoring
    "machine": machine(),
}
suffix = "" if args.backbone == "tiny" else f"_{args.backbone}"
suffix += "" if args.attention == "auto" else f"_{args.attention}"
out = ROOT / "results" / "bench" / f"default_run_{args.connector}_{args.task}{suffix}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
