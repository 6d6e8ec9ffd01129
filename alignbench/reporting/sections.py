"""The report's sections on probes (noise, image corruptions, ALIGN's vocabulary), on variance components and power
(`alignbench report --plan DELTA` prints the same table), and the tables benchmark scripts left beside the runs."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

from ..errors import AlignBenchError
from ..probes.write import plot, probe_markdown, vocab_markdown
from .scores import PAPER, blind_mean, fmt, load_scores, paired, qualified, single
from .stats import (
    bootstrap,
    detectable_difference,
    paired_difference,
    questions_needed,
    seeds_needed,
    variance_components,
)
from .tables import markdown_rows


def _probes_of(probes: dict, kind: str, title: str, command: str) -> tuple[list[dict], list[str]]:
    """The probes of one kind found under the directory and their section's opening lines, which say how to make
    one where there is none."""
    found = [p for (k, _), p in probes.items() if k == kind]
    lines = [f"## {title}", ""]
    if not found:
        label = "vocabulary" if kind == "vocab" else kind
        lines += [f"No {label} probe under this directory; run `{command}`.", ""]
    return found, lines


def _heading(p: dict) -> str:
    sources = p.get("sources", [])
    if len(sources) <= 1:
        return f"### {p['task']} (`{p.get('command', '')}`)"
    commands = "; ".join(f"`{s['command']}`" for s in sources)
    return (
        f"### {p['task']}\n\nJoined from {len(sources)} probes measured the same way (each connector and seed: its "
        f"newest measurement): {commands}"
    )


def _figure(p: dict, figures: Path, kind: str) -> str:
    """Plot one probe into the report's figures; its file name there."""
    name = f"{kind}_{p['task']}.png"
    plot(p, figures / name)
    return name


def noise_section(probes: dict, figures: Path, scores: dict) -> list[str]:
    title = "5. Finding 2: robustness to noise on the vision features"
    found, lines = _probes_of(probes, "noise", title, "alignbench probe noise")
    for p in found:
        name = _figure(p, figures, "noise")
        lines += [_heading(p), "", probe_markdown(p), f"![noise](figures/{name})", ""]
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
            blind = blind_mean(scores, c, p["task"])
            if blind is None:
                continue
            clean_mean = sum(r["scores"][clean]["score"] for r in rs) / len(rs)
            cells = []
            for sg in sigmas[1:]:
                noisy_mean = sum(r["scores"][sg]["score"] for r in rs) / len(rs)
                margin = clean_mean - blind
                cells.append(f"{100 * (noisy_mean - blind) / margin:.0f} %" if margin > 0 else "–")
            retained.append([c, f"{100 * (clean_mean - blind):.1f}", *cells])
        if retained:
            lines += [
                "Share of the clean margin above the blind baseline that survives the noise "
                "((noisy − blind) / (clean − blind)):",
                "",
                markdown_rows(["connector", "clean − blind", *[f"σ={sg}" for sg in sigmas[1:]]], retained),
                "",
            ]
        if "align" in by and "mlp" in by:
            seeds = sorted({r["seed"] for r in by["align"]} & {r["seed"] for r in by["mlp"]})
            mlp_runs = [r for s in seeds for r in by["mlp"] if r["seed"] == s]
            align_runs = [r for s in seeds for r in by["align"] if r["seed"] == s]
            iv = paired_difference(drops(mlp_runs), drops(align_runs))
            d_mlp, d_align = bootstrap(drops(mlp_runs)), bootstrap(drops(align_runs))
            verdict = (
                qualified("reproduces", [iv])
                if iv.low > 0
                else qualified("does not reproduce", [iv])
                if iv.high < 0
                else "is inconclusive"
            )
            align_blind = blind_mean(scores, "align", p["task"])
            align_clean = sum(r["scores"][clean]["score"] for r in align_runs) / max(1, len(align_runs))
            if align_blind is not None and align_clean - align_blind < d_mlp.estimate:
                verdict = (
                    f"cannot be tested (ALIGN's clean score is only {100 * (align_clean - align_blind):.1f} "
                    "points above its blind baseline, less than MLP's drop, so it has less to lose; compare "
                    "the surviving shares above)"
                )
            drift = {c: sum(r["drift"][worst] for r in rs) / len(rs) for c, rs in by.items()}
            lines += [
                f"At σ = {worst} ({p['sigma_mode']}): MLP drops {fmt(d_mlp)} points, ALIGN drops "
                f"{fmt(d_align)}; MLP's drop minus ALIGN's: {fmt(iv)} (p = {iv.p_value:.3f}). "
                f"Paper (σ = 3, absolute, average over tasks): MLP −{PAPER['noise_drop']['mlp']}, ALIGN "
                f"−{PAPER['noise_drop']['align']}. **The noise gap {verdict}** on {p['task']}.",
                "",
                "Cosine distance between outputs on clean and noisy features: "
                + ", ".join(f"{c} {v:.4f}" for c, v in drift.items())
                + f" (paper: ALIGN {PAPER['drift']['align']}, MLP {PAPER['drift']['mlp']}).",
                "",
            ]
            if any(r["trained_now"] for rs in by.values() for r in rs):
                lines += ["Some runs were trained by this probe because they were missing.", ""]
    return lines


def image_section(probes: dict, figures: Path) -> list[str]:
    found, lines = _probes_of(probes, "image", "6. Image corruptions (noise a scanner makes)", "alignbench probe image")
    for p in found:
        name = _figure(p, figures, "image")
        levels = "; ".join(f"{k}: {v}" for k, v in p["levels"].items())
        lines += [_heading(p), "", f"Levels (severity 1, 2, 3): {levels}.", "", probe_markdown(p)]
        lines += [f"![image corruptions](figures/{name})", ""]
    return lines


def vocab_section(probes: dict) -> list[str]:
    title = "7. ALIGN's vocabulary distribution"
    found, lines = _probes_of(probes, "vocab", title, "alignbench probe vocab --run DIR")
    if not found:
        return lines
    for p in found:
        lines += [_heading(p), "", vocab_markdown(p)]
    lines += [
        "The paper reports a dense averaged distribution (many tokens with small mass, no single dominant "
        "token) and little loss when E_text is pruned to the most used tokens.",
        "",
    ]
    return lines


# ---------------------------------------------------------------- variance components and power

PLAN_DELTA = 0.02  # the difference (score units) the report plans for: 2 points


PLAN_COLUMNS = [
    "task",
    "scores",
    "seeds",
    "pages / seed",
    "questions / page",
    "σ seed",
    "σ page",
    "σ question",
    "detectable (80 %)",
    "seeds for Δ",
    "questions / seed for Δ",
]


PLAN_NOTE = (
    "σ: standard deviations in points, method-of-moments estimates of a nested random-effects ANOVA "
    "(between seeds, between pages within a seed, between questions within a page). Detectable: the smallest "
    "true difference the present design (seeds, pages per seed, questions per page) detects with 80 % power "
    "at two-sided α = 0.05 (t test over seed means, seeds − 1 degrees of freedom; one seed: the normal "
    "test). Seeds for Δ: seeds needed at the present pages and questions; questions / seed for Δ: questions "
    "per seed needed at the present seeds (none: the seed variance alone prevents it)."
)


NO_SEED_NOTE = (
    "σ seed –: one seed, training variance is not measured and is taken as 0, so the figures marked ≥ are lower bounds."
)


NO_PAGE_NOTE = (
    "σ page –: one question per page, page and question variance are not separable and σ question is their sum."
)


def power_plan(scores: dict, connectors: list[str], tasks: list[str], delta: float) -> list[dict]:
    """Per task, for each connector and each pair (a − b per question): the variance components, the smallest
    difference the design detects, and the seeds or questions per seed that would detect `delta` (score units)."""
    rows = []
    for t in tasks:
        present = [c for c in connectors if (c, t) in scores]
        subjects = [(c, *single(scores[(c, t)])) for c in present]
        for a, b in combinations(present, 2):
            ga, gb, pages = paired(scores[(a, t)], scores[(b, t)])
            diffs = [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(ga, gb)]
            subjects.append((f"{a} − {b}", diffs, pages))
        for name, groups, pages in subjects:
            if not any(len(g) for g in groups):
                continue
            c = variance_components(groups, pages)
            rows.append(
                {
                    "task": t,
                    "scores": name,
                    "components": c,
                    "detectable": detectable_difference(c, c.seeds, c.pages, c.questions),
                    "seeds_needed": seeds_needed(c, delta),
                    "questions_needed": questions_needed(c, delta, c.seeds),
                }
            )
    return rows


def _sd(variance: float) -> str:
    return "–" if math.isnan(variance) else f"{100 * math.sqrt(variance):.1f}"


def plan_cells(row: dict) -> list[str]:
    """One power_plan row as the strings of PLAN_COLUMNS."""
    c = row["components"]
    bound = "≥ " if math.isnan(c.seed) else ""  # unmeasured seed variance taken as 0: a lower bound
    seeds = f"{bound}{row['seeds_needed']}" if row["seeds_needed"] is not None else "> 100000"
    questions = f"{bound}{row['questions_needed']}" if row["questions_needed"] is not None else "none"
    return [
        row["task"],
        row["scores"],
        str(c.seeds),
        f"{c.pages:.0f}",
        f"{c.questions:.2f}",
        _sd(c.seed),
        _sd(c.page),
        _sd(c.question),
        f"{bound}{100 * row['detectable']:.1f}",
        seeds,
        questions,
    ]


def plan_notes(rows: list[dict]) -> list[str]:
    """The notes under a power plan: what the columns mean, and what could not be measured."""
    return (
        [PLAN_NOTE]
        + [NO_SEED_NOTE] * any(math.isnan(r["components"].seed) for r in rows)
        + [NO_PAGE_NOTE] * any(math.isnan(r["components"].page) for r in rows)
    )


def plan_table(
    runs: Path, connectors: list[str], tasks: list[str], delta_points: float
) -> tuple[list[list[str]], list[str]]:
    """`alignbench report --plan DELTA`: the power plan's rows (strings) for a difference of `delta_points`, and
    its notes."""
    if not math.isfinite(delta_points) or delta_points <= 0:
        raise AlignBenchError(f"--plan {delta_points:g} must be a positive difference in points, e.g. --plan 2")
    rows = power_plan(load_scores(runs, connectors, tasks), connectors, tasks, delta_points / 100)
    return [plan_cells(r) for r in rows], plan_notes(rows)


def variance_section(scores: dict, connectors: list[str], tasks: list[str]) -> list[str]:
    rows = power_plan(scores, connectors, tasks, PLAN_DELTA)
    header = [col.replace("Δ", f"{100 * PLAN_DELTA:g} points") for col in PLAN_COLUMNS]
    notes = [line for note in plan_notes(rows) for line in ("", note.replace("Δ", f"{100 * PLAN_DELTA:g} points"))]
    return [
        "## 8. Variance components and the smallest detectable difference",
        "",
        markdown_rows(header, [plan_cells(r) for r in rows]),
        *notes,
        "",
        "`alignbench report --plan DELTA` prints this table for a difference of DELTA points.",
        "",
    ]


def measured_notes(runs: Path, number: int) -> list[str]:
    """Tables a benchmark script wrote next to the runs to explain them (`page_information_TASK.md`: how many
    characters each connector's visual tokens carry on the embedded pages)."""
    found = sorted(runs.glob("page_information_*.md"))
    if not found:
        return []
    lines = [
        f"## {number}. How much text a visual token carries",
        "",
        "A connector that merges patches must hand the LLM several characters at one input position; the "
        "embedded LLM reads one character per token. Measured from each connector's own receptive fields:",
        "",
    ]
    for path in found:
        lines += [path.read_text().strip(), ""]
    return lines
