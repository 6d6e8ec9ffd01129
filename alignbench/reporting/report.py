"""`alignbench report`: the comparison a reader wants, from the runs and probes under one output directory.

Every number is computed from per-sample scores on disk (each run's predictions.jsonl, each probe's
probe.json): 95 % confidence intervals per connector and task with seeds as a random factor and pages as clusters
(`stats`), a paired test for every pair of connectors on the same questions (Holm-adjusted per task), the blind
baseline, the variance components and the smallest difference the design detects, the noise and image probes,
ALIGN's vocabulary analysis, and the paper's numbers beside ours where the task matches. The same runs give the
same report, byte for byte: the date is the newest run's, and every resampling has a fixed seed.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

from ..io import atomic_write
from ..probes.collect import collect_probes
from .cost import cost_section
from .curves import curves_section
from .scores import (
    ONE_SEED,
    PAPER,
    PAPER_ORDER,
    SIGNIFICANT,
    cell,
    difference,
    load_scores,
    paired,
    qualified,
    single,
    verdict,
)
from .sections import image_section, measured_notes, noise_section, variance_section, vocab_section
from .stats import bootstrap, holm, paired_difference
from .tables import markdown_rows


def write_report(
    runs: Path, out: Path, connectors: list[str], tasks: list[str], command: str, probe_setup_of=None
) -> Path:
    """Write the report of the runs and probes under `runs` to `out`. `probe_setup_of(probe)`: the setup of a probe
    that does not record one (`alignbench.probes.collect`)."""
    scores = load_scores(runs, connectors, tasks)
    connectors = [c for c in connectors if any((c, t) in scores for t in tasks)]
    figures = out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["# AlignBench report", "", *_header(command, runs, scores), ""]

    # 1. connectors x tasks with confidence intervals, blind baseline beside
    lines += ["## 1. Connectors × tasks", ""]
    rows, cis = [], {}
    for c in connectors:
        cells, seeds = [], set()
        for t in tasks:
            e = scores.get((c, t))
            if e is None:
                cells.append("–")
                continue
            groups, pages = single(e)
            iv = bootstrap(groups, pages=pages)
            cis[(c, t)] = iv
            seeds |= set(e["seeds"])
            cells.append(cell(iv))
        rows.append([c, *cells, str(len(seeds))])
    for c in connectors:
        cells = []
        for t in tasks:
            e = scores.get((c, t))
            blind, pages = single(e, "blind") if e else ([], [])
            cells.append(cell(bootstrap(blind, pages=pages)) if blind else "–")
        rows.append([f"blind ({c}, shuffled pages)", *cells, ""])
    lines.append(markdown_rows(["connector", *tasks, "seeds"], rows))
    one_seed = any(not iv.measures_training for iv in cis.values())
    lines += ["", ONE_SEED] if one_seed else []
    lines += ["", "Above the blind baseline (paired difference, same questions, same trained model):", ""]
    rows = []
    for c in connectors:
        cells = []
        for t in tasks:
            e = scores.get((c, t))
            if e is None:
                cells.append("–")
                continue
            ga, gb, pages = paired(e, e, "scores", "blind")
            cells.append(cell(paired_difference(ga, gb, pages=pages)) if ga else "–")
        rows.append([c, *cells])
    lines.append(markdown_rows(["connector", *tasks], rows))
    lines += ["", ONE_SEED] if one_seed else []
    _bar_plot(cis, connectors, tasks, figures / "scores.png")
    lines += ["", "![scores](figures/scores.png)", ""]

    # 2. the paper's numbers beside ours
    lines += [
        "## 2. The paper's numbers beside ours",
        "",
        "AlignVLM with Llama-3.2-3B on the real benchmarks (Table 2 high-resource, Table 3 low-resource) "
        "against this report's embedded sets. The tasks match in kind and metric, not in data or scale, so "
        "compare orderings, not values.",
        "",
    ]
    rows = []
    for c in connectors:
        cells = []
        for t in tasks:
            ours = f"{100 * cis[(c, t)].estimate:.1f}" if (c, t) in cis else "–"
            hi, lo = PAPER["high"].get(c, {}).get(t), PAPER["low"].get(c, {}).get(t)
            cells.append(f"{ours} / {hi if hi is not None else '–'} / {lo if lo is not None else '–'}")
        rows.append([c, *cells])
    lines += [markdown_rows(["connector", *[f"{t} ours / paper high / paper low" for t in tasks]], rows), ""]

    # 3. finding 1: the document-task ordering
    lines += ["## 3. Finding 1: ALIGN > Ovis > MLP > Perceiver on document tasks", ""]
    chain = [c for c in PAPER_ORDER if c in connectors]
    verdicts = {}
    rows = []
    for t in tasks:
        present = [c for c in chain if (c, t) in scores]
        if len(present) < 2:
            continue
        order = sorted(present, key=lambda c: -cis[(c, t)].estimate)
        ivs = []
        for a, b in zip(chain, chain[1:]):
            if (a, t) in scores and (b, t) in scores:
                ivs.append(difference(scores[(a, t)], scores[(b, t)]))
        verdicts[t] = verdict(ivs)
        cells = [f"{cell(iv)} (p={iv.p_value:.3f})" for iv in ivs]
        rows.append([t, " > ".join(order), *cells, verdicts[t]])
    lines.append(
        markdown_rows(["task", "observed order", *[f"{a} − {b}" for a, b in zip(chain, chain[1:])], "verdict"], rows)
    )
    lines += [
        "",
        "A verdict *reproduces* when every adjacent difference of the paper's order is positive with "
        "its 95 % interval above 0, *does not reproduce* when any is negative with its interval below 0, "
        "and is *inconclusive* otherwise; a verdict that rests on one seed says so (training variance is "
        "then not measured).",
        "",
    ]

    lines += _pairs_section(scores, connectors, tasks)

    # 5. probes
    probes = collect_probes(runs, probe_setup_of)
    lines += noise_section(probes, figures, scores)
    lines += image_section(probes, figures)
    lines += vocab_section(probes)
    lines += variance_section(scores, connectors, tasks)

    # 9. what each connector costs, and what it buys; 10. how each trained
    means = {key: iv.estimate for key, iv in cis.items()}
    lines += cost_section(runs, figures, means, tasks, number=9)
    trained = {
        c: {seed: s["run"] for seed, s in next(scores[(c, t)] for t in tasks if (c, t) in scores)["seeds"].items()}
        for c in connectors
    }
    lines += curves_section(runs / "runs", trained, figures, number=10)
    lines += measured_notes(runs, number=11)

    atomic_write(out, "\n".join(lines) + "\n")
    return out


def _header(command: str, runs: Path, scores: dict) -> list[str]:
    """The paragraph that says where the numbers come from and how the intervals are made."""
    finished = sorted(f for e in scores.values() for f in e["finished"])
    when = f"on runs that finished by {finished[-1][:10]}" if finished else "on runs with no recorded finish time"
    lines = [
        f"Produced by `{command}` {when}, from the runs and probes under `{runs}`. Scores are in points (ANLS "
        "or relaxed accuracy × 100): the mean over training seeds of each seed's mean over its questions. "
        "Intervals are 95 %. Seeds are a random factor, so an interval is about the training recipe, not one "
        "trained model, and widens when seeds disagree: with two or more seeds it is a t interval over the "
        "seed means (seeds − 1 degrees of freedom); with one seed (marked †) it is the percentile interval of "
        "a bootstrap that resamples pages, the questions of a page together (they share an image), and "
        "training variance is not measured. Differences are paired (per question a − b on the same "
        "questions), with a two-sided p-value of the same method. Model, estimators and their check by "
        "simulation: docs/statistics.md."
    ]
    runs_without = sum(s["pages"] is None for e in scores.values() for s in e["seeds"].values())
    if runs_without:
        lines += [
            "",
            f"{runs_without} of {sum(len(e['seeds']) for e in scores.values())} runs' prediction records "
            "carry no page index (written before pages were recorded): there every question counts as its "
            "own page.",
        ]
    precisions = Counter(s.get("eval_dtype") for e in scores.values() for s in e["seeds"].values())
    if len(precisions) > 1:
        unrecorded = "not recorded (scored before --eval-dtype, in the LLM's own precision)"
        counts = ", ".join(
            f"{name or unrecorded}: {n}"
            for name, n in sorted(precisions.items(), key=lambda x: (x[0] is None, str(x[0])))
        )
        lines += [
            "",
            f"The runs were scored in different precisions ({counts}; each run's `results.json`: `eval_dtype`). "
            "A question's answer can differ between them by the precision alone (docs/fairness.md), so their "
            "differences hold that too.",
        ]
    return lines


def _pairs_section(scores: dict, connectors: list[str], tasks: list[str]) -> list[str]:
    """Section 4: every pair of connectors per task, p-values Holm-adjusted over the pairs of the task."""
    lines = ["## 4. Paired differences, every pair of connectors", ""]
    rows, one_seed = [], False
    for t in tasks:
        pairs = [(a, b) for a, b in combinations(connectors, 2) if (a, t) in scores and (b, t) in scores]
        ivs = [difference(scores[(a, t)], scores[(b, t)]) for a, b in pairs]
        adjusted = holm([iv.p_value for iv in ivs]) if ivs else []
        one_seed |= any(not iv.measures_training for iv in ivs)
        for (a, b), iv, p in zip(pairs, ivs, adjusted):
            significant = qualified("yes", [iv]) if p <= SIGNIFICANT else "no"
            rows.append([t, f"{a} − {b}", cell(iv), f"{iv.p_value:.3f}", f"{p:.3f}", significant])
    lines.append(markdown_rows(["task", "pair (a − b)", "difference [95 % CI]", "p", "p (Holm)", "significant"], rows))
    lines += ["", ONE_SEED] if one_seed else []
    lines += [
        "",
        "p (Holm): Holm's step-down adjustment over the pairs of one task (each task is one family of "
        f"comparisons); *significant* means p (Holm) ≤ {SIGNIFICANT}. The intervals are not adjusted, so an "
        "interval that excludes 0 may still not be significant here.",
        "",
    ]
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
