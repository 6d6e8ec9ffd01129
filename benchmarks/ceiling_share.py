"""How much of the text-form ceiling each connector reaches, seed by seed, on the same questions.

    python benchmarks/ceiling_share.py [--runs results/smollm2] [--share 0.7] [--form "text form"]
        [--ceilings results/bench/text_ceiling_smollm2_trained_s*.json]
        -> results/bench/ceiling_share_smollm2.json and .md

The ceilings are `python benchmarks/text_ceiling.py --backbone smollm2 --train --seed S` (one file per study seed:
the recipe's LLM stage trained on the pages' cell tokens, scored per question, one question per evaluation page in
page order). Study seed S of a connector and ceiling seed S share their evaluation pages and questions (data seed
S), so each question is paired by its page; where both record it, the question itself must agree too (its text, or
the uid where a run's uids are the embedded `eval-PAGE-QUESTION`).

Per task and connector, over the seeds both have:
- the ceiling and the connector: mean of seed means with the report's interval (`alignbench.reporting.stats`: a t
  interval over seed means from two seeds on, the page bootstrap for one);
- share: the connector's mean over the ceiling's mean on the same seeds, and per seed;
- the bar "connector >= SHARE x ceiling": the paired difference connector - SHARE x ceiling per question, its
  interval, and a verdict (met: the interval is above 0; not met: below 0; else inconclusive).
"""

import argparse
import glob
import json
import sys
from pathlib import Path

from alignbench.reporting.scores import load_scores
from alignbench.reporting.stats import Interval, bootstrap, paired_difference
from alignbench.run.leaderboard import read_leaderboard, training_runs

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["docvqa", "infovqa", "chartqa"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_ceilings(paths: list[Path], form: str) -> tuple[dict, list[dict]]:
    """{task: {seed: {page: question record}}} and each file's seed and precision."""
    out: dict = {task: {} for task in TASKS}
    files = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            fail(f"cannot read the ceiling {path}: {e}; write it again with benchmarks/text_ceiling.py")
        if "trained" not in data or "seed" not in data:
            fail(f"{path} is not a trained ceiling with a seed; run benchmarks/text_ceiling.py --train --seed S")
        seed = int(data["seed"])
        for task in TASKS:
            questions = data.get(task, {}).get(form, {}).get("questions")
            if questions is None:
                fail(f"{path} has no per-question scores of {task} ({form!r}); run benchmarks/text_ceiling.py again")
            if seed in out[task]:
                fail(f"two ceilings of seed {seed}: give one file per seed")
            out[task][seed] = {q.get("page", i): q for i, q in enumerate(questions)}
        files.append(
            {
                "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                "seed": seed,
                "eval_dtype": data.get("eval_dtype"),
                "llm_steps": data["trained"].get("llm_steps"),
            }
        )
    return out, files


def same_question(record: dict | None, uid: str, question: str | None) -> bool:
    """Whether the ceiling's record of a page asked the run's question: its text where both record it, and its uid
    where the run's uids are the embedded `eval-PAGE-QUESTION`."""
    if record is None:
        return False
    if question is not None and record.get("question") not in (None, question):
        return False
    return not uid.startswith("eval-") or record["uid"] == uid


def share_of(conn: list, ceil: list) -> float | None:
    total = sum(sum(c) for c in ceil)
    return None if total == 0 else sum(sum(c) for c in conn) / total


def interval_dict(iv: Interval) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in iv.as_dict().items()}


def pct(iv: Interval) -> str:
    return f"{100 * iv.estimate:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "smollm2")
    parser.add_argument("--ceilings", default=str(ROOT / "results" / "bench" / "text_ceiling_smollm2_trained_s*.json"))
    parser.add_argument("--form", default="text form", help="which ceiling form: 'text form' or 'ordinary text'")
    parser.add_argument("--share", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "ceiling_share_smollm2")
    args = parser.parse_args()
    if not 0 < args.share <= 1:
        parser.error("--share must be in (0, 1]")
    paths = sorted(Path(p) for p in glob.glob(args.ceilings))
    if not paths:
        fail(f"no ceiling file matches {args.ceilings}; run benchmarks/text_ceiling.py --backbone smollm2 --train")
    ceilings, files = read_ceilings(paths, args.form)
    board = args.runs / "leaderboard.csv"
    if not board.is_file():
        fail(f"no leaderboard at {board}; give --runs the study's output directory")
    connectors = list(dict.fromkeys(training_runs(read_leaderboard(board)).connector))
    scores = load_scores(args.runs, connectors, TASKS)
    report: dict = {
        "command": "python benchmarks/ceiling_share.py " + " ".join(sys.argv[1:]),
        "form": args.form,
        "share": args.share,
        "ceilings": files,
        "tasks": {},
    }
    lines = [
        f"# Share of the text-form ceiling ({args.form}), paired by question and seed",
        "",
        f"`{report['command'].strip()}`. Ceilings: "
        + ", ".join(f"`{f['file']}` (seed {f['seed']}, {f['eval_dtype']})" for f in files)
        + ". Scores in points; intervals 95 % (t over seed means).",
        "",
    ]
    for task in TASKS:
        ceil_seeds = ceilings[task]
        ceil_iv = bootstrap([[q["score"] for q in v.values()] for _, v in sorted(ceil_seeds.items())])
        t = report["tasks"][task] = {"ceiling": interval_dict(ceil_iv), "connectors": {}}
        lines += [
            f"## {task}: ceiling {pct(ceil_iv)} ({len(ceil_seeds)} seed{'s' if len(ceil_seeds) > 1 else ''})",
            "",
            f"| connector | seeds | score | ceiling, same seeds | share | share per seed | "
            f"connector - {args.share:g} x ceiling | bar |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for conn in connectors:
            entry = scores.get((conn, task))
            if entry is None:
                continue
            conn_g, ceil_g, pages, seeds = [], [], [], []
            for seed, s in sorted(entry["seeds"].items()):
                if seed not in ceil_seeds:
                    continue
                ceiling = ceil_seeds[seed]
                if s["pages"] is None:
                    fail(f"{conn} seed {seed} on {task} records no pages ({s['run']}); score it again")
                other = [
                    (p, u)
                    for p, u, q in zip(s["pages"], s["uids"], s["questions"])
                    if not same_question(ceiling.get(p), u, q)
                ]
                if other:
                    fail(
                        f"{conn} seed {seed} on {task} asks {len(other)} questions the ceiling of seed {seed} does "
                        f"not (first: page {other[0][0]}, {other[0][1]}); both must score the default evaluation split"
                    )
                conn_g.append(list(s["scores"]))
                ceil_g.append([float(ceiling[p]["score"]) for p in s["pages"]])
                pages.append(s["pages"])
                seeds.append(seed)
            if not seeds:
                continue
            conn_iv, same_ceil = bootstrap(conn_g, pages=pages), bootstrap(ceil_g, pages=pages)
            bar = paired_difference(conn_g, [[args.share * c for c in g] for g in ceil_g], pages=pages)
            per_seed = [share_of([c], [e]) for c, e in zip(conn_g, ceil_g)]
            share = share_of(conn_g, ceil_g)
            verdict = "met" if bar.low > 0 else "not met" if bar.high < 0 else "inconclusive"
            t["connectors"][conn] = {
                "seeds": seeds,
                "score": interval_dict(conn_iv),
                "ceiling_same_seeds": interval_dict(same_ceil),
                "share": None if share is None else round(share, 4),
                "share_per_seed": [None if x is None else round(x, 4) for x in per_seed],
                "bar_difference": interval_dict(bar),
                "bar": verdict,
                "eval_dtype": sorted({str(s.get("eval_dtype")) for s in entry["seeds"].values()}),
            }
            fmt_share = "n/a" if share is None else f"{100 * share:.0f} %"
            fmt_seeds = ", ".join("n/a" if x is None else f"{100 * x:.0f} %" for x in per_seed)
            lines.append(
                f"| {conn} | {','.join(map(str, seeds))} | {pct(conn_iv)} | {pct(same_ceil)} | {fmt_share} | "
                f"{fmt_seeds} | {pct(bar)} | {verdict} |"
            )
        lines.append("")
    recorded = sorted({d for t in report["tasks"].values() for c in t["connectors"].values() for d in c["eval_dtype"]})
    lines.append(
        "The runs' scoring precision (`eval_dtype` in results.json; None: scored before it was recorded, in the "
        f"LLM's own precision): {', '.join(recorded)}."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"-> {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
