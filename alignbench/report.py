"""`alignbench report`: the comparison a reader wants, from the runs and probes under one output directory.

Every number is computed from per-sample scores on disk (each run's predictions.jsonl, each probe's
probe.json): 95 % confidence intervals per connector and task with seeds as a random factor and pages as clusters
(`stats`), a paired test for every pair of connectors on the same questions (Holm-adjusted per task), the blind
baseline, the variance components and the smallest difference the design detects, the noise and image probes,
ALIGN's vocabulary analysis, and the paper's numbers beside ours where the task matches. The same runs give the
same report, byte for byte: the date is the newest run's, and every resampling has a fixed seed.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

from .cost import cost_section
from .errors import AlignBenchError
from .metrics import get_metric
from .probe import latest_probes, probe_markdown, vocab_markdown
from .results import atomic_write, read_leaderboard, training_runs
from .stats import (
    Interval,
    bootstrap,
    detectable_difference,
    holm,
    paired_difference,
    questions_needed,
    seeds_needed,
    variance_components,
)
from .tracking import curves_section

# AlignVLM (Llama-3.2-3B): Table 2 (high-resource) and Table 3 (low-resource), and the noise analysis.
PAPER = {
    "high": {"mlp": {"docvqa": 71.46, "infovqa": 37.56, "chartqa": 66.48},
             "perceiver": {"docvqa": 69.08, "infovqa": 34.13, "chartqa": 65.16},
             "ovis": {"docvqa": 74.68, "infovqa": 42.11, "chartqa": 67.92},
             "align": {"docvqa": 79.63, "infovqa": 44.53, "chartqa": 71.88}},
    "low": {"mlp": {"docvqa": 42.11, "infovqa": 19.93, "chartqa": 48.44},
            "perceiver": {"docvqa": 32.18, "infovqa": 18.10, "chartqa": 40.00},
            "ovis": {"docvqa": 57.73, "infovqa": 26.39, "chartqa": 54.52},
            "align": {"docvqa": 71.43, "infovqa": 30.50, "chartqa": 69.72},
            "hreducer": {"docvqa": 34.59, "infovqa": 17.57, "chartqa": 45.64},
            "cabstractor": {"docvqa": 55.86, "infovqa": 19.36, "chartqa": 55.32}},  # HoneyBee
    "noise_drop": {"mlp": 25.54, "align": 1.67},  # average score drop at sigma = 3 (points)
    "drift": {"mlp": 0.3938, "align": 0.0036},  # cosine distance of outputs, clean vs noisy
}
PAPER_ORDER = ["align", "ovis", "mlp", "perceiver"]  # document tasks, best first


ONE_SEED = ("† one seed: the interval covers the sampling of pages and questions only; training variance (between "
            "seeds) is not measured.")
SIGNIFICANT = 0.05  # level of the tests (after Holm's adjustment in section 4)


def _fmt(iv, scale: float = 100.0) -> str:
    return f"{scale * iv.estimate:.1f} [{scale * iv.low:.1f}, {scale * iv.high:.1f}]"


def _cell(iv: Interval) -> str:
    """An interval in points, marked † when it rests on one seed."""
    return _fmt(iv) + ("" if iv.measures_training else " †")


def _qualified(word: str, ivs: list[Interval]) -> str:
    """A verdict, qualified when a difference behind it rests on one seed."""
    return word if all(iv.measures_training for iv in ivs) else f"{word} (1 seed: questions only)"


def load_scores(runs: Path, connectors: list[str], tasks: list[str]) -> dict:
    """{(connector, task): {"seeds": {seed: {"uids", "scores", "blind", "pages"}}, "metric", "runs", "finished"}}
    from the latest run of each (connector, task, seed) in the leaderboard. "pages": each question's page index
    in its run's evaluation set, None for records written before pages were recorded; "finished": the runs'
    finish times from the leaderboard."""
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
        entry = out.setdefault((row.connector, row.task),
                               {"seeds": {}, "metric": row.metric, "runs": [], "finished": []})
        entry["runs"].append(str(row.run_id))
        if isinstance(getattr(row, "finished", None), str):
            entry["finished"].append(row.finished)
        entry["seeds"][int(row.seed)] = {
            "uids": [r["uid"] for r in records], "scores": [r["score"] for r in records],
            "blind": [metric(r["blind_prediction"], r["answers"]) for r in records] if records and
            "blind_prediction" in records[0] else None,
            "pages": [r["page"] for r in records] if all("page" in r for r in records) else None,
            "run": str(row.run_id),
        }
    if not out:
        raise AlignBenchError(f"no runs of {connectors} on {tasks} with predictions under {runs}; run "
                              "`alignbench sweep --output DIR` first")
    return out


def _paired(a: dict, b: dict, key_a: str = "scores", key_b: str = "scores"):
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


def _single(e: dict, key: str = "scores"):
    """Per-seed score lists of one entry and their pages (seeds that have `key`)."""
    seeds = [s for s in e["seeds"].values() if s[key] is not None]
    return [s[key] for s in seeds], [s["pages"] for s in seeds]


def _difference(a: dict, b: dict, key_a: str = "scores", key_b: str = "scores") -> Interval:
    ga, gb, pages = _paired(a, b, key_a, key_b)
    return paired_difference(ga, gb, pages=pages)


def _verdict(ivs: list) -> str:
    if all(iv.low > 0 for iv in ivs):
        return _qualified("reproduces", ivs)
    if any(iv.high < 0 for iv in ivs):
        return _qualified("does not reproduce", ivs)
    return "inconclusive"


def write_report(runs: Path, out: Path, connectors: list[str], tasks: list[str], command: str) -> Path:
    from .probe import plot as probe_plot

    scores = load_scores(runs, connectors, tasks)
    connectors = [c for c in connectors if any((c, t) in scores for t in tasks)]
    figures = out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["# AlignBench report", "", *_header(command, runs, scores), ""]

    # 1. connectors x tasks with confidence intervals, blind baseline beside
    lines += ["## 1. Connectors × tasks", "", "| connector | " + " | ".join(tasks) + " | seeds |",
              "|" + "---|" * (len(tasks) + 2)]
    cis: dict = {}
    for c in connectors:
        cells, seeds = [], set()
        for t in tasks:
            e = scores.get((c, t))
            if e is None:
                cells.append("–")
                continue
            groups, pages = _single(e)
            iv = bootstrap(groups, pages=pages)
            cis[(c, t)] = iv
            seeds |= set(e["seeds"])
            cells.append(_cell(iv))
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {len(seeds)} |")
    for c in connectors:
        cells = []
        for t in tasks:
            e = scores.get((c, t))
            blind, pages = _single(e, "blind") if e else ([], [])
            cells.append(_cell(bootstrap(blind, pages=pages)) if blind else "–")
        lines.append(f"| blind ({c}, shuffled pages) | " + " | ".join(cells) + " | |")
    one_seed = any(not iv.measures_training for iv in cis.values())
    lines += ["", ONE_SEED] if one_seed else []
    lines += ["", "Above the blind baseline (paired difference, same questions, same trained model):", "",
              "| connector | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for c in connectors:
        cells = []
        for t in tasks:
            e = scores.get((c, t))
            if e is None:
                cells.append("–")
                continue
            ga, gb, pages = _paired(e, e, "scores", "blind")
            cells.append(_cell(paired_difference(ga, gb, pages=pages)) if ga else "–")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", ONE_SEED] if one_seed else []
    _bar_plot(cis, connectors, tasks, figures / "scores.png")
    lines += ["", "![scores](figures/scores.png)", ""]

    # 2. the paper's numbers beside ours
    lines += ["## 2. The paper's numbers beside ours", "",
              "AlignVLM with Llama-3.2-3B on the real benchmarks (Table 2 high-resource, Table 3 low-resource) "
              "against this report's embedded sets. The tasks match in kind and metric, not in data or scale, so "
              "compare orderings, not values.", "",
              "| connector | " + " | ".join(f"{t} ours / paper high / paper low" for t in tasks) + " |",
              "|" + "---|" * (len(tasks) + 1)]
    for c in connectors:
        cells = []
        for t in tasks:
            ours = f"{100 * cis[(c, t)].estimate:.1f}" if (c, t) in cis else "–"
            hi, lo = PAPER["high"].get(c, {}).get(t), PAPER["low"].get(c, {}).get(t)
            cells.append(f"{ours} / {hi if hi is not None else '–'} / {lo if lo is not None else '–'}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("")

    # 3. finding 1: the document-task ordering
    lines += ["## 3. Finding 1: ALIGN > Ovis > MLP > Perceiver on document tasks", ""]
    chain = [c for c in PAPER_ORDER if c in connectors]
    verdicts = {}
    pairs = " | ".join(f"{a} − {b}" for a, b in zip(chain, chain[1:]))
    lines += [f"| task | observed order | {pairs} | verdict |", "|" + "---|" * (len(chain) + 2)]
    for t in tasks:
        present = [c for c in chain if (c, t) in scores]
        if len(present) < 2:
            continue
        order = sorted(present, key=lambda c: -cis[(c, t)].estimate)
        ivs = []
        for a, b in zip(chain, chain[1:]):
            if (a, t) in scores and (b, t) in scores:
                ivs.append(_difference(scores[(a, t)], scores[(b, t)]))
        verdicts[t] = _verdict(ivs)
        cells = [f"{_cell(iv)} (p={iv.p_value:.3f})" for iv in ivs]
        lines.append(f"| {t} | {' > '.join(order)} | " + " | ".join(cells) + f" | {verdicts[t]} |")
    lines += ["", "A verdict *reproduces* when every adjacent difference of the paper's order is positive with "
              "its 95 % interval above 0, *does not reproduce* when any is negative with its interval below 0, "
              "and is *inconclusive* otherwise; a verdict that rests on one seed says so (training variance is "
              "then not measured).", ""]

    lines += _pairs_section(scores, connectors, tasks)

    # 5. probes
    probes = latest_probes(runs)
    lines += _noise_section(probes, figures, probe_plot, scores)
    lines += _image_section(probes, figures, probe_plot)
    lines += _vocab_section(probes)
    lines += _variance_section(scores, connectors, tasks)

    # 9. what each connector costs, and what it buys; 10. how each trained
    means = {key: iv.estimate for key, iv in cis.items()}
    lines += cost_section(runs, figures, means, tasks, number=9)
    trained = {c: {seed: s["run"] for seed, s in next(scores[(c, t)] for t in tasks if (c, t) in scores)[
        "seeds"].items()} for c in connectors}
    lines += curves_section(runs / "runs", trained, figures, number=10)
    lines += _measured_notes(runs, number=11)

    atomic_write(out, "\n".join(lines) + "\n")
    return out


def _header(command: str, runs: Path, scores: dict) -> list[str]:
    """The paragraph that says where the numbers come from and how the intervals are made."""
    finished = sorted(f for e in scores.values() for f in e["finished"])
    when = f"on runs that finished by {finished[-1][:10]}" if finished else "on runs with no recorded finish time"
    lines = [f"Produced by `{command}` {when}, from the runs and probes under `{runs}`. Scores are in points (ANLS "
             "or relaxed accuracy × 100): the mean over training seeds of each seed's mean over its questions. "
             "Intervals are 95 %. Seeds are a random factor, so an interval is about the training recipe, not one "
             "trained model, and widens when seeds disagree: with two or more seeds it is a t interval over the "
             "seed means (seeds − 1 degrees of freedom); with one seed (marked †) it is the percentile interval of "
             "a bootstrap that resamples pages, the questions of a page together (they share an image), and "
             "training variance is not measured. Differences are paired (per question a − b on the same "
             "questions), with a two-sided p-value of the same method. Model, estimators and their check by "
             "simulation: docs/statistics.md."]
    runs_without = sum(s["pages"] is None for e in scores.values() for s in e["seeds"].values())
    if runs_without:
        lines += ["", f"{runs_without} of {sum(len(e['seeds']) for e in scores.values())} runs' prediction records "
                  "carry no page index (written before pages were recorded): there every question counts as its "
                  "own page."]
    return lines


def _pairs_section(scores: dict, connectors: list[str], tasks: list[str]) -> list[str]:
    """Section 4: every pair of connectors per task, p-values Holm-adjusted over the pairs of the task."""
    lines = ["## 4. Paired differences, every pair of connectors", "",
             "| task | pair (a − b) | difference [95 % CI] | p | p (Holm) | significant |",
             "|---|---|---|---|---|---|"]
    one_seed = False
    for t in tasks:
        pairs = [(a, b) for a, b in combinations(connectors, 2) if (a, t) in scores and (b, t) in scores]
        ivs = [_difference(scores[(a, t)], scores[(b, t)]) for a, b in pairs]
        adjusted = holm([iv.p_value for iv in ivs]) if ivs else []
        one_seed |= any(not iv.measures_training for iv in ivs)
        for (a, b), iv, p in zip(pairs, ivs, adjusted):
            significant = _qualified("yes", [iv]) if p <= SIGNIFICANT else "no"
            lines.append(f"| {t} | {a} − {b} | {_cell(iv)} | {iv.p_value:.3f} | {p:.3f} | {significant} |")
    lines += ["", ONE_SEED] if one_seed else []
    lines += ["", "p (Holm): Holm's step-down adjustment over the pairs of one task (each task is one family of "
              f"comparisons); *significant* means p (Holm) ≤ {SIGNIFICANT}. The intervals are not adjusted, so an "
              "interval that excludes 0 may still not be significant here.", ""]
    return lines


def _bar_plot(cis: dict, connectors: list[str], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(connectors))
    for i, c in enumerate(connectors):
        xs = [j + i * width for j, t in enumerate(tasks) if (c, t) in cis]
        ivs = [cis[(c, t)] for t in tasks if (c, t) in cis]
        ys = np.array([100 * iv.estimate for iv in ivs])
        err = np.array([[100 * (iv.estimate - iv.low) for iv in ivs], [100 * (iv.high - iv.estimate) for iv in ivs]])
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=c)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
    ax.set_ylabel("score (points, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _blind_mean(scores: dict, connector: str, task: str) -> float | None:
    e = scores.get((connector, task))
    blind = [s["blind"] for s in e["seeds"].values() if s["blind"] is not None] if e else []
    return bootstrap(blind).estimate if blind else None


def _noise_section(probes: dict, figures: Path, probe_plot, scores: dict) -> list[str]:
    found = [p for (kind, _), p in probes.items() if kind == "noise"]
    lines = ["## 5. Finding 2: robustness to noise on the vision features", ""]
    if not found:
        return lines + ["No noise probe under this directory; run `alignbench probe noise`.", ""]
    for p in found:
        name = f"noise_{p['task']}.png"
        probe_plot(p, figures / name)
        lines += [f"### {p['task']} (`{p.get('command', '')}`)", "", probe_markdown(p), f"![noise](figures/{name})", ""]
        sigmas = [f"{s:g}" for s in p["sigmas"]]
        clean, worst = sigmas[0], sigmas[-1]
        by = {}
        for r in p["runs"]:
            by.setdefault(r["connector"], []).append(r)

        def drops(runs, clean=clean, worst=worst):
            return [[c - n for c, n in zip(r["per_sample"][clean], r["per_sample"][worst])] for r in runs]

        # A drop means little for a connector near its blind baseline: it has little to lose. The share of
        # the clean margin above the blind baseline that survives the noise puts connectors on one scale.
        retained = []
        for c, rs in by.items():
            blind = _blind_mean(scores, c, p["task"])
            if blind is None:
                continue
            clean_mean = sum(r["scores"][clean]["score"] for r in rs) / len(rs)
            cells = []
            for sg in sigmas[1:]:
                noisy_mean = sum(r["scores"][sg]["score"] for r in rs) / len(rs)
                margin = clean_mean - blind
                cells.append(f"{100 * (noisy_mean - blind) / margin:.0f} %" if margin > 0 else "–")
            retained.append(f"| {c} | {100 * (clean_mean - blind):.1f} | " + " | ".join(cells) + " |")
        if retained:
            lines += ["Share of the clean margin above the blind baseline that survives the noise "
                      "((noisy − blind) / (clean − blind)):", "",
                      "| connector | clean − blind | " + " | ".join(f"σ={sg}" for sg in sigmas[1:]) + " |",
                      "|" + "---|" * (len(sigmas) + 1), *retained, ""]
        if "align" in by and "mlp" in by:
            seeds = sorted({r["seed"] for r in by["align"]} & {r["seed"] for r in by["mlp"]})
            mlp_runs = [r for s in seeds for r in by["mlp"] if r["seed"] == s]
            align_runs = [r for s in seeds for r in by["align"] if r["seed"] == s]
            iv = paired_difference(drops(mlp_runs), drops(align_runs))
            d_mlp, d_align = bootstrap(drops(mlp_runs)), bootstrap(drops(align_runs))
            verdict = (_qualified("reproduces", [iv]) if iv.low > 0 else
                       _qualified("does not reproduce", [iv]) if iv.high < 0 else "is inconclusive")
            align_blind = _blind_mean(scores, "align", p["task"])
            align_clean = sum(r["scores"][clean]["score"] for r in align_runs) / max(1, len(align_runs))
            if align_blind is not None and align_clean - align_blind < d_mlp.estimate:
                verdict = (f"cannot be tested (ALIGN's clean score is only {100 * (align_clean - align_blind):.1f} "
                           "points above its blind baseline, less than MLP's drop, so it has less to lose; compare "
                           "the surviving shares above)")
            drift = {c: sum(r["drift"][worst] for r in rs) / len(rs) for c, rs in by.items()}
            lines += [f"At σ = {worst} ({p['sigma_mode']}): MLP drops {_fmt(d_mlp)} points, ALIGN drops "
                      f"{_fmt(d_align)}; MLP's drop minus ALIGN's: {_fmt(iv)} (p = {iv.p_value:.3f}). "
                      f"Paper (σ = 3, absolute, average over tasks): MLP −{PAPER['noise_drop']['mlp']}, ALIGN "
                      f"−{PAPER['noise_drop']['align']}. **The noise gap {verdict}** on {p['task']}.", "",
                      "Cosine distance between outputs on clean and noisy features: " +
                      ", ".join(f"{c} {v:.4f}" for c, v in drift.items()) +
                      f" (paper: ALIGN {PAPER['drift']['align']}, MLP {PAPER['drift']['mlp']}).", ""]
            if any(r["trained_now"] for rs in by.values() for r in rs):
                lines += ["Some runs were trained by this probe because they were missing.", ""]
    return lines


def _image_section(probes: dict, figures: Path, probe_plot) -> list[str]:
    found = [p for (kind, _), p in probes.items() if kind == "image"]
    lines = ["## 6. Image corruptions (noise a scanner makes)", ""]
    if not found:
        return lines + ["No image probe under this directory; run `alignbench probe image`.", ""]
    for p in found:
        name = f"image_{p['task']}.png"
        probe_plot(p, figures / name)
        levels = "; ".join(f"{k}: {v}" for k, v in p["levels"].items())
        lines += [f"### {p['task']} (`{p.get('command', '')}`)", "", f"Levels (severity 1, 2, 3): {levels}.", "",
                  probe_markdown(p), f"![image corruptions](figures/{name})", ""]
    return lines


def _vocab_section(probes: dict) -> list[str]:
    found = [p for (kind, _), p in probes.items() if kind == "vocab"]
    lines = ["## 7. ALIGN's vocabulary distribution", ""]
    if not found:
        return lines + ["No vocabulary probe under this directory; run `alignbench probe vocab --run DIR`.", ""]
    for p in found:
        lines += [f"### {p['task']} (`{p.get('command', '')}`)", "", vocab_markdown(p)]
    lines += ["The paper reports a dense averaged distribution (many tokens with small mass, no single dominant "
              "token) and little loss when E_text is pruned to the most used tokens.", ""]
    return lines


# ---------------------------------------------------------------- variance components and power

PLAN_DELTA = 0.02  # the difference (score units) the report plans for: 2 points
PLAN_COLUMNS = ["task", "scores", "seeds", "pages / seed", "questions / page", "σ seed", "σ page", "σ question",
                "detectable (80 %)", "seeds for Δ", "questions / seed for Δ"]
PLAN_NOTE = ("σ: standard deviations in points, method-of-moments estimates of a nested random-effects ANOVA "
             "(between seeds, between pages within a seed, between questions within a page). Detectable: the smallest "
             "true difference the present design (seeds, pages per seed, questions per page) detects with 80 % power "
             "at two-sided α = 0.05 (t test over seed means, seeds − 1 degrees of freedom; one seed: the normal "
             "test). Seeds for Δ: seeds needed at the present pages and questions; questions / seed for Δ: questions "
             "per seed needed at the present seeds (none: the seed variance alone prevents it).")
NO_SEED_NOTE = ("σ seed –: one seed, training variance is not measured and is taken as 0, so the figures marked ≥ are "
                "lower bounds.")
NO_PAGE_NOTE = ("σ page –: one question per page, page and question variance are not separable and σ question is "
                "their sum.")


def power_plan(scores: dict, connectors: list[str], tasks: list[str], delta: float) -> list[dict]:
    """Per task, for each connector and each pair (a − b per question): the variance components, the smallest
    difference the design detects, and the seeds or questions per seed that would detect `delta` (score units)."""
    rows = []
    for t in tasks:
        present = [c for c in connectors if (c, t) in scores]
        subjects = [(c, *_single(scores[(c, t)])) for c in present]
        for a, b in combinations(present, 2):
            ga, gb, pages = _paired(scores[(a, t)], scores[(b, t)])
            diffs = [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(ga, gb)]
            subjects.append((f"{a} − {b}", diffs, pages))
        for name, groups, pages in subjects:
            if not any(len(g) for g in groups):
                continue
            c = variance_components(groups, pages)
            rows.append({"task": t, "scores": name, "components": c,
                         "detectable": detectable_difference(c, c.seeds, c.pages, c.questions),
                         "seeds_needed": seeds_needed(c, delta),
                         "questions_needed": questions_needed(c, delta, c.seeds)})
    return rows


def _sd(variance: float) -> str:
    return "–" if math.isnan(variance) else f"{100 * math.sqrt(variance):.1f}"


def plan_cells(row: dict) -> list[str]:
    """One power_plan row as the strings of PLAN_COLUMNS."""
    c = row["components"]
    bound = "≥ " if math.isnan(c.seed) else ""  # unmeasured seed variance taken as 0: a lower bound
    seeds = f"{bound}{row['seeds_needed']}" if row["seeds_needed"] is not None else "> 100000"
    questions = f"{bound}{row['questions_needed']}" if row["questions_needed"] is not None else "none"
    return [row["task"], row["scores"], str(c.seeds), f"{c.pages:.0f}", f"{c.questions:.2f}", _sd(c.seed),
            _sd(c.page), _sd(c.question), f"{bound}{100 * row['detectable']:.1f}", seeds, questions]


def plan_notes(rows: list[dict]) -> list[str]:
    """The notes under a power plan: what the columns mean, and what could not be measured."""
    return ([PLAN_NOTE] + [NO_SEED_NOTE] * any(math.isnan(r["components"].seed) for r in rows)
            + [NO_PAGE_NOTE] * any(math.isnan(r["components"].page) for r in rows))


def plan_table(runs: Path, connectors: list[str], tasks: list[str], delta_points: float
               ) -> tuple[list[list[str]], list[str]]:
    """`alignbench report --plan DELTA`: the power plan's rows (strings) for a difference of `delta_points`, and
    its notes."""
    if not math.isfinite(delta_points) or delta_points <= 0:
        raise AlignBenchError(f"--plan {delta_points:g} must be a positive difference in points, e.g. --plan 2")
    rows = power_plan(load_scores(runs, connectors, tasks), connectors, tasks, delta_points / 100)
    return [plan_cells(r) for r in rows], plan_notes(rows)


def _variance_section(scores: dict, connectors: list[str], tasks: list[str]) -> list[str]:
    rows = power_plan(scores, connectors, tasks, PLAN_DELTA)
    header = [col.replace("Δ", f"{100 * PLAN_DELTA:g} points") for col in PLAN_COLUMNS]
    notes = [line for note in plan_notes(rows) for line in ("", note.replace("Δ", f"{100 * PLAN_DELTA:g} points"))]
    return ["## 8. Variance components and the smallest detectable difference", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(plan_cells(r)) + " |" for r in rows), *notes,
            "", "`alignbench report --plan DELTA` prints this table for a difference of DELTA points.", ""]


def _measured_notes(runs: Path, number: int) -> list[str]:
    """Tables a benchmark script wrote next to the runs to explain them (`page_information_TASK.md`: how many
    characters each connector's visual tokens carry on the embedded pages)."""
    found = sorted(runs.glob("page_information_*.md"))
    if not found:
        return []
    lines = [f"## {number}. How much text a visual token carries", "",
             "A connector that merges patches must hand the LLM several characters at one input position; the "
             "embedded LLM reads one character per token. Measured from each connector's own receptive fields:", ""]
    for path in found:
        lines += [path.read_text().strip(), ""]
    return lines
