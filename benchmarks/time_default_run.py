"""Wall time of the README's first command on this machine, as on a fresh machine.

A fresh cache folder means the embedded datasets are generated inside the timed run (the prepared
backbone ships with the package). Writes results/bench/default_run.json.

    python benchmarks/time_default_run.py [--connector align --task docvqa]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignbench.results import machine

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser()
parser.add_argument("--connector", default="align")
parser.add_argument("--task", default="docvqa")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    cmd = ["alignbench", "run", "--connector", args.connector, "--task", args.task, "--output", f"{tmp}/out"]
    env = {**os.environ, "ALIGNBENCH_CACHE": f"{tmp}/cache"}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed: {proc.stderr}")
    run_dir = next(Path(f"{tmp}/out/runs").iterdir())
    result = json.loads((run_dir / "results.json").read_text())

report = {"command": " ".join(cmd[:6]), "wall_seconds": round(wall, 1), "score": result["score"],
          "stderr": result["stderr"], "n": result["n"], "blind_score": result["blind"]["score"],
          "train_seconds": result["train_seconds"], "eval_seconds": result["eval_seconds"], "machine": machine()}
out = ROOT / "results" / "bench" / f"default_run_{args.connector}_{args.task}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
