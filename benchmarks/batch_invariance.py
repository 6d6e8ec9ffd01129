"""Does a trained run's answer to a question depend on the batch it is scored in? Per scoring precision.

    python benchmarks/batch_invariance.py RUN_DIR [--batch-sizes 64,16] [--dtypes model,float32] [--threads 2]
                                          [--out results/bench/batch_invariance_NAME]
        -> NAME.json and NAME.md (NAME: the run's task, connector and seed)

For each precision (`--eval-dtype`: `model` = the LLM's own, `float32`) the run's evaluation split is scored
at every batch size without the blind pass, then at the first batch size with it. Counted: answers that differ
from those at the first batch size, answers of the evaluation pass that differ when the blind pass runs beside
it, and answers that differ between the precisions (first batch size). Scores and seconds for every setting.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from alignbench.config.eval import EvalConfig
from alignbench.evaluate import evaluate
from alignbench.run.checkpoint_eval import load_run
from alignbench.run.outputs import machine
from alignbench.run.workspace import quiet_libraries
from alignbench.task import TASKS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--batch-sizes", default="64,16")
    parser.add_argument("--dtypes", default="model,float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.run / "config.json").is_file():
        parser.error(f"{args.run} is not a run directory (no config.json)")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    dtypes = args.dtypes.split(",")
    quiet_libraries()
    torch.set_num_threads(args.threads)
    model, cfg, ws = load_run(args.run, "cpu", log=lambda *a: None)
    task = TASKS.get(cfg.task)
    split, feats = ws.split(task, cfg.data.eval_split)
    name = f"batch_invariance_{cfg.task}_{cfg.connector}_s{cfg.data.seed}"
    out = args.out or ROOT / "results" / "bench" / name

    def score(dtype: str, batch_size: int, blind: bool) -> dict:
        t0 = time.time()
        eval_cfg = EvalConfig(batch_size=batch_size, blind=blind, dtype=dtype)
        result, records = evaluate(model, task, split, feats, eval_cfg)
        row = {
            "dtype": dtype,
            "computed_in": result["eval_dtype"],
            "batch_size": batch_size,
            "blind": blind,
            "score": result["score"],
            "seconds": round(time.time() - t0, 1),
            "predictions": [r["prediction"] for r in records],
        }
        print(
            f"{dtype} ({row['computed_in']}) batch {batch_size} blind {blind}: {100 * row['score']:.2f} "
            f"in {row['seconds']} s",
            flush=True,
        )
        return row

    rows, summary = [], []
    first: dict[str, list[str]] = {}
    for dtype in dtypes:
        mine = [score(dtype, b, False) for b in sizes] + [score(dtype, sizes[0], True)]
        first[dtype] = mine[0]["predictions"]
        for row in mine:
            row["differ_from_first"] = sum(a != b for a, b in zip(row["predictions"], first[dtype]))
        rows += mine
        summary.append(
            {
                "dtype": dtype,
                "computed_in": mine[0]["computed_in"],
                "answers_differing_by_batch_size": {str(r["batch_size"]): r["differ_from_first"] for r in mine[1:-1]},
                "answers_differing_with_the_blind_pass": mine[-1]["differ_from_first"],
                "scores": {f"{r['batch_size']}{'+blind' if r['blind'] else ''}": r["score"] for r in mine},
                "seconds": {f"{r['batch_size']}{'+blind' if r['blind'] else ''}": r["seconds"] for r in mine},
            }
        )
    across = {}
    if len(dtypes) > 1:
        a, b = dtypes[0], dtypes[1]
        across = {"pair": [a, b], "answers_differing": sum(x != y for x, y in zip(first[a], first[b]))}
    n = len(split.samples)
    report = {
        "command": "python benchmarks/batch_invariance.py " + " ".join(sys.argv[1:]),
        "run": str(args.run),
        "n": n,
        "summary": summary,
        "across_dtypes": across,
        "rows": [{k: v for k, v in r.items() if k != "predictions"} for r in rows],
        "machine": machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Answers against the batch: `{args.run.name}`",
        "",
        f"`{report['command']}` ({n} questions; {machine()['cpu']}, {args.threads} threads)",
        "",
        "| --eval-dtype (computes in) | answers differing: batch size | with the blind pass | scores | seconds |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        by_size = ", ".join(f"{b}: {k}" for b, k in s["answers_differing_by_batch_size"].items())
        scores = ", ".join(f"{k}: {100 * v:.2f}" for k, v in s["scores"].items())
        secs = ", ".join(f"{k}: {v:g}" for k, v in s["seconds"].items())
        lines.append(
            f"| {s['dtype']} ({s['computed_in']}) | {by_size} (against {sizes[0]}) | "
            f"{s['answers_differing_with_the_blind_pass']} | {scores} | {secs} |"
        )
    if across:
        lines += [
            "",
            f"Answers differing between {across['pair'][0]} and {across['pair'][1]} (batch {sizes[0]}): "
            f"{across['answers_differing']} of {n}.",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
