"""Per-question scores of the runs under an output directory, and the intervals and verdicts the report draws from
them (`alignbench.reporting.stats`): each connector's mean with a 95 % interval, paired differences on the same
questions, and the paper's numbers they are set against."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AlignBenchError
from ..metrics import get_metric
from ..run.leaderboard import read_leaderboard, training_runs
from .stats import Interval, bootstrap, paired_difference

# AlignVLM (Llama-3.2-3B): Table 2 (high-resource) and Table 3 (low-resource), and the noise analysis.
PAPER = {
    "high": {
        "mlp": {"docvqa": 71.46, "infovqa": 37.56, "chartqa": 66.48},
        "perceiver": {"docvqa": 69.08, "infovqa": 34.13, "chartqa": 65.16},
        "ovis": {"docvqa": 74.68, "infovqa": 42.11, "chartqa": 67.92},
        "align": {"docvqa": 79.63, "infovqa": 44.53, "chartqa": 71.88},
    },
    "low": {
        "mlp": {"docvqa": 42.11, "infovqa": 19.93, "chartqa": 48.44},
        "perceiver": {"docvqa": 32.18, "infovqa": 18.10, "chartqa": 40.00},
        "ovis": {"docvqa": 57.73, "infovqa": 26.39, "chartqa": 54.52},
        "align": {"docvqa": 71.43, "infovqa": 30.50, "chartqa": 69.72},
        "hreducer": {"docvqa": 34.59, "infovqa": 17.57, "chartqa": 45.64},
        "cabstractor": {"docvqa": 55.86, "infovqa": 19.36, "chartqa": 55.32},
    },  # HoneyBee
    "noise_drop": {"mlp": 25.54, "align": 1.67},  # average score drop at sigma = 3 (points)
    "drift": {"mlp": 0.3938, "align": 0.0036},  # cosine distance of outputs, clean vs noisy
}


PAPER_ORDER = ["align", "ovis", "mlp", "perceiver"]  # document tasks, best first


ONE_SEED = (
    "† one seed: the interval covers the sampling of pages and questions only; training variance (between "
    "seeds) is not measured."
)


SIGNIFICANT = 0.05  # level of the tests (after Holm's adjustment in section 4)


def fmt(iv, scale: float = 100.0) -> str:
    return f"{scale * iv.estimate:.1f} [{scale * iv.low:.1f}, {scale * iv.high:.1f}]"


def cell(iv: Interval) -> str:
    """An interval in points, marked † when it rests on one seed."""
    return fmt(iv) + ("" if iv.measures_training else " †")


def qualified(word: str, ivs: list[Interval]) -> str:
    """A verdict, qualified when a difference behind it rests on one seed."""
    return word if all(iv.measures_training for iv in ivs) else f"{word} (1 seed: questions only)"


def load_scores(runs: Path, connectors: list[str], tasks: list[str]) -> dict:
    """{(connector, task): {"seeds": {seed: {"uids", "questions", "scores", "blind", "pages"}}, "metric", "runs",
    "finished"}}
    from the latest run of each (connector, task, seed) in the leaderboard. "pages": each question's page index
    in its run's evaluation set, None for records written before pages were recorded; "eval_dtype": the precision the
    LLM scored in (results.json), None for runs scored before it was recorded; "finished": the runs' finish times
    from the leaderboard."""
    board = training_runs(read_leaderboard(runs / "leaderboard.csv"))
    latest = board.drop_duplicates(["connector", "task", "seed"], keep="last")
    out: dict = {}
    for _, row in latest.iterrows():
        if row.connector not in connectors or row.task not in tasks:
            continue
        path = runs / "runs" / str(row.run_id) / "predictions.jsonl"
        if not path.is_file():
            continue
        metric = get_metric(row.metric)
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        entry = out.setdefault(
            (row.connector, row.task), {"seeds": {}, "metric": row.metric, "runs": [], "finished": []}
        )
        entry["runs"].append(str(row.run_id))
        if isinstance(getattr(row, "finished", None), str):
            entry["finished"].append(row.finished)
        entry["seeds"][int(row.seed)] = {
            "uids": [r["uid"] for r in records],
            "questions": [r.get("question") for r in records],
            "scores": [r["score"] for r in records],
            "blind": [metric(r["blind_prediction"], r["answers"]) for r in records]
            if records and "blind_prediction" in records[0]
            else None,
            "pages": [r["page"] for r in records] if all("page" in r for r in records) else None,
            "run": str(row.run_id),
            "eval_dtype": _eval_dtype(path.parent / "results.json"),
        }
    if not out:
        raise AlignBenchError(
            f"no runs of {connectors} on {tasks} with predictions under {runs}; run "
            "`alignbench sweep --output DIR` first"
        )
    return out


def _eval_dtype(results: Path) -> str | None:
    try:
        return json.loads(results.read_text()).get("eval_dtype")
    except (OSError, ValueError, AttributeError):
        return None


def paired(a: dict, b: dict, key_a: str = "scores", key_b: str = "scores"):
    """Per-seed aligned score lists of two entries (same questions), seeds both have, and each question's page
    (a's; None for a seed whose records carry no page)."""
    ga, gb, pages = [], [], []
    for seed in sorted(set(a["seeds"]) & set(b["seeds"])):
        sa, sb = a["seeds"][seed], b["seeds"][seed]
        if sa[key_a] is None or sb[key_b] is None:
            continue
        index = {u: i for i, u in enumerate(sb["uids"])}
        common = [(i, index[u]) for i, u in enumerate(sa["uids"]) if u in index]
        ga.append([sa[key_a][i] for i, _ in common])
        gb.append([sb[key_b][j] for _, j in common])
        pages.append(None if sa["pages"] is None else [sa["pages"][i] for i, _ in common])
    return ga, gb, pages


def single(e: dict, key: str = "scores"):
    """Per-seed score lists of one entry and their pages (seeds that have `key`)."""
    seeds = [s for s in e["seeds"].values() if s[key] is not None]
    return [s[key] for s in seeds], [s["pages"] for s in seeds]


def difference(a: dict, b: dict, key_a: str = "scores", key_b: str = "scores") -> Interval:
    ga, gb, pages = paired(a, b, key_a, key_b)
    return paired_difference(ga, gb, pages=pages)


def verdict(ivs: list) -> str:
    if all(iv.low > 0 for iv in ivs):
        return qualified("reproduces", ivs)
    if any(iv.high < 0 for iv in ivs):
        return qualified("does not reproduce", ivs)
    return "inconclusive"


def blind_mean(scores: dict, connector: str, task: str) -> float | None:
    e = scores.get((connector, task))
    blind = [s["blind"] for s in e["seeds"].values() if s["blind"] is not None] if e else []
    return bootstrap(blind).estimate if blind else None
