"""Re-evaluate saved runs with the current code and compare every prediction with the saved one.

    python benchmarks/reproduce_predictions.py RUN_DIR [RUN_DIR ...] [--threads 1] [--out FILE]
        -> results/bench/reproduce_predictions.json (or FILE)

For each run directory (embedded backbone): the trained weights are loaded, the evaluation split is
predicted as `alignbench run` predicts it (its EvalConfig, the blind pass included), and each question's
prediction and blind prediction are compared with predictions.jsonl, as is the score with results.json.
Used to check that a change of the evaluation code (batching, prefix sharing) leaves results unchanged.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from alignbench.evaluate import evaluate
from alignbench.run.checkpoint_eval import load_run
from alignbench.run.outputs import machine
from alignbench.run.workspace import quiet_libraries
from alignbench.task import TASKS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "reproduce_predictions.json")
    args = parser.parse_args()
    missing = [str(r) for r in args.runs if not (r / "predictions.jsonl").is_file()]
    if missing:
        parser.error(f"not run directories with predictions.jsonl: {', '.join(missing)}")
    quiet_libraries()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        model, cfg, ws = load_run(run, "cpu", log=lambda *a: None)
        task = TASKS.get(cfg.task)
        split, feats = ws.split(task, cfg.data.eval_split)
        result, records = evaluate(model, task, split, feats, cfg.eval)
        saved = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
        differ = [
            r["uid"]
            for r, s in zip(records, saved)
            if (r["prediction"], r.get("blind_prediction")) != (s["prediction"], s.get("blind_prediction"))
        ]
        saved_result = json.loads((run / "results.json").read_text())
        saved_score = saved_result["score"]
        rows.append(
            {
                "run": run.name,
                "n": len(records),
                "same_count": len(records) == len(saved),
                "different_predictions": differ,
                "score": result["score"],
                "saved_score": saved_score,
                "blind_score": result.get("blind", {}).get("score"),
                "saved_blind_score": saved_result.get("blind", {}).get("score"),
                "eval_dtype": result["eval_dtype"],
                "saved_eval_dtype": saved_result.get("eval_dtype"),
                "eval_seconds": result["eval_seconds"],
                "saved_eval_seconds": saved_result.get("eval_seconds"),
            }
        )
        print(
            f"{run.name}: {len(records) - len(differ)} of {len(records)} predictions (and blind predictions) "
            f"identical; score {result['score']:.4f} (saved {saved_score:.4f})",
            flush=True,
        )
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "python benchmarks/reproduce_predictions.py " + " ".join(sys.argv[1:]),
                "rows": rows,
                "machine": machine(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
