"""Start-up time of the command line: `alignbench --help` and `alignbench run --help` as whole processes (the
interpreter, imports and the generated options), the median of several; and whether either imported torch.
Writes results/bench/cli_startup.json.

    python benchmarks/cli_startup.py [--repeats 7]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from alignbench.run.outputs import machine

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["run", "--help"])
# The same entry point as the `alignbench` script, and whether torch came in on the way.
PROBE = (
    "import sys\nsys.argv = ['alignbench', *sys.argv[1:]]\nfrom alignbench.cli import main\ntry:\n    main()\n"
    "finally:\n    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)"
)

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()

rows = []
for argv in COMMANDS:
    script = [sys.executable, "-c", PROBE, *argv]
    torch_imported = "torch imported: True" in subprocess.run(script, capture_output=True, text=True).stderr
    times = []
    for _ in range(args.repeats):  # the console script as a user starts it
        t0 = time.perf_counter()
        proc = subprocess.run(["alignbench", *argv], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"alignbench {' '.join(argv)} failed: {proc.stderr}")
    rows.append(
        {
            "command": "alignbench " + " ".join(argv),
            "median_seconds": round(statistics.median(times), 3),
            "min_seconds": round(min(times), 3),
            "max_seconds": round(max(times), 3),
            "repeats": args.repeats,
            "torch_imported": torch_imported,
        }
    )

report = {"commands": rows, "machine": machine()}
out = ROOT / "results" / "bench" / "cli_startup.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
