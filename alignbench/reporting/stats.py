"""Confidence intervals, paired tests, variance components and power for scores from several trainings.

Model. A score y (0..1) of one connector on one task is y[s, p, q] = mu + a[s] + b[s, p] + e[s, p, q]: seed s
(one training of the recipe, with its own evaluation draw), page p within the seed (questions on one page share an
image), question q within the page. The three terms are independent with variances var_seed, var_page and
var_question (a nested random-effects model). The estimand is mu, the expected score of the recipe: seeds are a
random factor, so a new training is a new draw of a[s].

Estimate. The mean over seeds of each seed's mean over its questions (each question weighs the same within its seed,
each seed the same): mean_of_seed_means.

Resampling. The hierarchical bootstrap (`hierarchical_resample`) draws S seeds with replacement, then within each
drawn seed its pages with replacement, then (optionally) within each drawn page its questions with replacement;
every draw is vectorised and made with `np.random.default_rng(seed)`, so results repeat exactly.

Interval, chosen by simulation (`simulate`; benchmarks/stats_simulation.py and docs/statistics.md give the figures).
The bootstrap's variance splits, by the law of total variance over the draw of the top level, into a between term
(S - 1) / S * s^2 / S, s^2 the sample variance of the seed means, and a within term W / S, W the mean resampling
variance of one seed's mean. Each seed mean already carries its own page and question noise, so s^2 / S alone is
unbiased for the variance of the estimate: adding W / S counts that noise twice, and (S - 1) / S shrinks the seed
term. Resampling every level therefore over-covers when seeds agree and, with 3 seeds, under-covers when they
disagree (the small-cluster problem); a t interval on its total standard error over-covers. So:
  * S >= 2 seeds: estimate +- t(S - 1) * SE with SE^2 = s^2 / S, the between-seed term made unbiased; the p-value
    is the same t test's. It is exact for normal seed means whatever the variance components, and covers 95 % in
    simulation at 3 seeds (300 one-question pages, or 60 pages of 5 questions), with or without seed variance.
  * one seed: the same argument one level down: pages are resampled and a drawn page keeps its questions (the
    cluster bootstrap); the percentile interval and the two-sided bootstrap p-value (mid-p for resampled means of
    exactly 0). Training variance is not measured: the interval is about this trained model, not about the recipe
    (`Interval.seeds` says so, and the report marks such intervals).
Paired differences (`paired_difference`): per question a - b on the same questions (the same seeds and pages),
the same way. Several comparisons: `holm` (Holm's step-down adjustment).

Variance components (`variance_components`): the method-of-moments estimator of the unbalanced nested ANOVA: mean
squares between seeds, between pages within seeds and within pages, equated to their expectations
  E[MS_within] = var_question,  E[MS_pages] = var_question + n0 var_page,
  E[MS_seeds] = var_question + n0' var_page + n0'' var_seed,
(n0, n0', n0'': the usual coefficients from the page and seed sizes), negative estimates set to 0. With one question
on every page the page and question terms are not separable (their sum is reported); with one seed the seed term
is not measured.

Power (`detectable_difference`, `seeds_needed`, `questions_needed`): the variance of the estimate for S seeds, P pages
per seed and Q questions per page is V = var_seed / S + var_page / (S P) + var_question / (S P Q). The t statistic
over seed means is noncentral t with S - 1 degrees of freedom and noncentrality delta / sqrt(V), so the smallest
difference detected with power 0.8 at two-sided alpha 0.05 is k(S - 1) sqrt(V), with k the noncentrality that gives
that power (one seed: the normal test, k = 2.80).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000
_CHUNK = 1 << 22  # values drawn at once by the bootstrap (32 MiB of float64)


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    p_value: float | None = None  # two-sided p-value of "the estimate is 0" (differences only)
    seeds: int = 1  # seeds behind it; with one, training variance is not part of the interval

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def measures_training(self) -> bool:
        return self.seeds >= 2

    def as_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "seeds": self.seeds,
        }


# ---------------------------------------------------------------- data: seeds of (scores, page of each score)


def _seed_data(groups: list, pages: list | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(scores [n], page index [n])] per non-empty seed; without pages each question is its own page."""
    pages = pages if pages is not None else [None] * len(groups)
    if len(pages) != len(groups):
        raise ValueError(f"pages for {len(pages)} seeds, scores for {len(groups)}")
    out = []
    for g, p in zip(groups, pages):
        values = np.asarray(g, dtype=float).ravel()
        if not values.size:
            continue
        page = np.arange(values.size) if p is None else np.asarray(p).ravel()
        if page.shape != values.shape:
            raise ValueError(f"{page.size} page indices for {values.size} scores")
        out.append((values, page))
    return out


def _page_table(values: np.ndarray, page: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores laid out by page: table [P, Q_max] (zero-padded) and questions per page [P]."""
    _, inverse = np.unique(page, return_inverse=True)
    counts = np.bincount(inverse)
    order = np.argsort(inverse, kind="stable")
    position = np.arange(values.size) - (np.cumsum(counts) - counts)[inverse[order]]
    table = np.zeros((counts.size, counts.max()))
    table[inverse[order], position] = values[order]
    return table, counts


# ---------------------------------------------------------------- the hierarchical bootstrap


def _resample_seed(
    table: np.ndarray, counts: np.ndarray, k: int, rng: np.random.Generator, questions: bool
) -> np.ndarray:
    """k bootstrap means [k] of one seed: its pages with replacement, then (`questions`) each drawn page's questions
    with replacement; otherwise a drawn page keeps its questions."""
    n_pages, q_max = table.shape
    out = np.empty(k)
    questions = questions and q_max > 1
    step = max(1, _CHUNK // (n_pages * (q_max if questions else 1)))
    for start in range(0, k, step):
        m = min(step, k - start)
        drawn = rng.integers(0, n_pages, (m, n_pages))  # [m, P] page indices
        n = counts[drawn]  # [m, P] questions on each drawn page
        if questions:
            position = (rng.random((m, n_pages, q_max)) * n[..., None]).astype(np.intp)  # [m, P, Q_max]
            keep = np.arange(q_max) < n[..., None]  # a page with n questions gets n draws
            total = np.where(keep, table[drawn[..., None], position], 0.0).sum(axis=(1, 2))
        else:
            total = table.sum(axis=1)[drawn].sum(axis=1)
        out[start : start + m] = total / n.sum(axis=1)
    return out


def hierarchical_resample(
    groups: list, pages: list | None = None, resamples: int = RESAMPLES, seed: int = 0, questions: bool = True
) -> np.ndarray:
    """Bootstrap means of seed means [resamples]: seeds with replacement, then pages within each drawn seed, then
    (`questions`) questions within each drawn page. Each slot of a resample that draws a seed resamples it anew."""
    data = [_page_table(v, p) for v, p in _seed_data(groups, pages)]
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, len(data), (resamples, len(data)))  # [R, S] the seed drawn into each slot
    means = np.empty(slots.shape)  # [R, S] each slot's resampled seed mean
    for s, (table, counts) in enumerate(data):
        chosen = slots == s
        means[chosen] = _resample_seed(table, counts, int(chosen.sum()), rng, questions)
    return means.mean(axis=1)


def _percentile_interval(estimate: float, draws: np.ndarray, confidence: float, with_p: bool) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    tie = np.mean(draws == 0) / 2  # a resampled mean of exactly 0 counts half to each side (mid-p)
    p = float(min(1.0, 2 * (min(np.mean(draws < 0), np.mean(draws > 0)) + tie))) if with_p else None
    return Interval(estimate, float(low), float(high), p, seeds=1)


def _t_interval(means: np.ndarray, confidence: float, with_p: bool) -> Interval:
    """estimate +- t(S - 1) SE over S >= 2 seed means, SE^2 = s^2 / S (see the module docstring)."""
    from scipy.stats import t

    estimate, df = float(means.mean()), means.size - 1
    se = float(means.std(ddof=1) / math.sqrt(means.size))
    if se == 0:  # the seeds agree exactly (every score equal): the interval is the point itself
        return Interval(estimate, estimate, estimate, (1.0 if estimate == 0 else 0.0) if with_p else None, means.size)
    half = float(t.ppf((1 + confidence) / 2, df)) * se
    p = float(2 * t.sf(abs(estimate) / se, df)) if with_p else None
    return Interval(estimate, estimate - half, estimate + half, p, means.size)


def bootstrap(
    groups: list,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    with_p: bool = False,
    pages: list | None = None,
    resamples: int = RESAMPLES,
) -> Interval:
    """Interval of the mean of seed means: groups[s] the scores of seed s, pages[s] their page indices (None:
    each question its own page). One seed: the page bootstrap's percentile interval; several: the t interval over
    seed means (module docstring)."""
    data = _seed_data(groups, pages)
    if not data:
        return Interval(float("nan"), float("nan"), float("nan"), seeds=0)
    means = np.array([v.mean() for v, _ in data])
    if len(data) >= 2:
        return _t_interval(means, confidence, with_p)
    estimate, values = float(means[0]), data[0][0]
    if np.all(values == values[0]):  # no spread: the interval is the point itself
        return Interval(estimate, estimate, estimate, (1.0 if estimate == 0 else 0.0) if with_p else None)
    draws = hierarchical_resample([values], [data[0][1]], resamples, seed, questions=False)
    return _percentile_interval(estimate, draws, confidence, with_p)


def paired_difference(
    a: list, b: list, seed: int = 0, pages: list | None = None, resamples: int = RESAMPLES
) -> Interval:
    """Mean difference a - b over the same questions (per seed, aligned), with its interval and p-value."""
    diffs = []
    for ga, gb in zip(a, b):
        ga, gb = np.asarray(ga, dtype=float), np.asarray(gb, dtype=float)
        if ga.shape != gb.shape:
            raise ValueError(f"paired groups differ in size ({ga.size} vs {gb.size})")
        diffs.append(ga - gb)
    return bootstrap(diffs, seed=seed, with_p=True, pages=pages, resamples=resamples)


def within_seed_bootstrap(
    groups: list, seed: int = 0, confidence: float = CONFIDENCE, resamples: int = RESAMPLES
) -> Interval:
    """The earlier method, kept to compare against: the questions of each seed resampled on their own (pages and
    seeds held fixed), percentile interval of the mean of seed means. Blind to training variance."""
    data = [v for v, _ in _seed_data(groups, None)]
    if not data:
        return Interval(float("nan"), float("nan"), float("nan"), seeds=0)
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for v in data:
        draws += v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1) / len(data)
    estimate = float(np.mean([v.mean() for v in data]))
    return _percentile_interval(estimate, draws, confidence, False)  # seeds=1: training variance is not in it


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values [m]: reject where adjusted <= alpha, family-wise error <= alpha.
    Written out because statsmodels is not a dependency."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = (p.size - np.arange(p.size)) * p[order]  # (m - i) p_(i), i = 0..m-1
    adjusted = np.empty(p.size)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


# ---------------------------------------------------------------- variance components and power


@dataclass(frozen=True)
class Components:
    """Variance components of a score (score^2 units: points^2 / 10^4) and the design they came from."""

    seed: float  # between seeds; nan with one seed (not measured)
    page: float  # between pages within a seed; nan where no page holds two questions (not separable)
    question: float  # within pages; with `page` nan, pages and questions together
    seeds: int
    pages: float  # mean pages per seed
    questions: float  # mean questions per page

    def variance_of_mean(self, seeds: float, pages: float, questions: float) -> float:
        """Variance of the mean of seed means for a design; an unmeasured seed term counts as 0."""
        seed = 0.0 if math.isnan(self.seed) else self.seed
        page = 0.0 if math.isnan(self.page) else self.page
        return seed / seeds + page / (seeds * pages) + self.question / (seeds * pages * questions)


def _nested_index(data: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All scores [N], the seed of each [N] and its page, numbered across seeds [N]."""
    y = np.concatenate([v for v, _ in data])
    seed_of = np.concatenate([np.full(v.size, s) for s, (v, _) in enumerate(data)])
    page_ids = [np.unique(p, return_inverse=True)[1] for _, p in data]
    offsets = np.cumsum([0] + [int(i.max()) + 1 for i in page_ids])
    return y, seed_of, np.concatenate([i + o for i, o in zip(page_ids, offsets)])


def variance_components(groups: list, pages: list | None = None) -> Components:
    """Method-of-moments (nested random-effects ANOVA) estimates of the seed, page and question variances."""
    y, seed_of, page_of = _nested_index(_seed_data(groups, pages))
    n_page, n_seed = np.bincount(page_of), np.bincount(seed_of)  # questions per page [P_all], per seed [S]
    seed_of_page = (np.bincount(page_of, seed_of) / n_page).astype(int)  # [P_all]
    mean_page, mean_seed = np.bincount(page_of, y) / n_page, np.bincount(seed_of, y) / n_seed
    n, n_pages, n_seeds = y.size, n_page.size, n_seed.size
    df_w, df_p, df_s = n - n_pages, n_pages - n_seeds, n_seeds - 1
    ms_w = float(((y - mean_page[page_of]) ** 2).sum() / df_w) if df_w else 0.0
    ms_p = float((n_page * (mean_page - mean_seed[seed_of_page]) ** 2).sum() / df_p) if df_p else float("nan")
    sum_sq_over_seed = float((n_page**2 / n_seed[seed_of_page]).sum())
    n0 = (n - sum_sq_over_seed) / df_p if df_p else float("nan")
    question = ms_w
    page = (ms_p - ms_w) / n0 if df_w else ms_p  # one question per page: n0 = 1, page + question together
    seed = float("nan")
    if df_s:
        ms_s = float((n_seed * (mean_seed - y.mean()) ** 2).sum() / df_s)
        n0_page = (sum_sq_over_seed - float((n_page**2).sum()) / n) / df_s
        n0_seed = (n - float((n_seed**2).sum()) / n) / df_s
        seed = max(0.0, (ms_s - question - n0_page * page) / n0_seed)
    if not df_w:
        question, page = page, float("nan")
    page = page if math.isnan(page) else max(0.0, page)
    return Components(seed, page, question, n_seeds, n_pages / n_seeds, n / n_pages)


@lru_cache(maxsize=256)
def _noncentrality(df: float, power: float, alpha: float) -> float:
    """The effect / SE at which a two-sided level-alpha t test with df degrees of freedom (inf: normal) has `power`."""
    from scipy.optimize import brentq
    from scipy.stats import nct, norm, t

    if math.isinf(df):
        crit = float(norm.ppf(1 - alpha / 2))

        def reach(k):
            return norm.sf(crit - k) + norm.cdf(-crit - k) - power
    else:
        crit = float(t.ppf(1 - alpha / 2, df))

        def reach(k):
            wrong_side = float(np.nan_to_num(nct.cdf(-crit, df, k)))  # negligible where scipy returns nan
            return nct.sf(crit, df, k) + wrong_side - power

    high = crit + 2.0
    while reach(high) < 0:  # widen the bracket until the power is reached
        high *= 2
    return float(brentq(reach, 0.0, high))


def _df(seeds: int) -> float:
    return seeds - 1 if seeds >= 2 else math.inf


def detectable_difference(
    c: Components, seeds: int, pages: float, questions: float, power: float = 0.8, alpha: float = 0.05
) -> float:
    """Smallest true difference (score units) the design detects with `power` at two-sided level `alpha`."""
    return _noncentrality(_df(seeds), power, alpha) * math.sqrt(c.variance_of_mean(seeds, pages, questions))


def seeds_needed(
    c: Components, delta: float, power: float = 0.8, alpha: float = 0.05, most: int = 100_000
) -> int | None:
    """Fewest seeds (>= 2) at the current pages and questions that detect `delta`; None beyond `most`."""

    def enough(s: int) -> bool:
        return detectable_difference(c, s, c.pages, c.questions, power, alpha) <= delta

    high = 2
    while not enough(high):  # the detectable difference falls as seeds are added: double, then bisect
        if high >= most:
            return None
        high = min(2 * high, most)
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return max(2, high)


def questions_needed(c: Components, delta: float, seeds: int, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Questions per seed (pages of the current size) that detect `delta` with `seeds` seeds; None when the seed
    variance alone prevents it."""
    room = (delta / _noncentrality(_df(seeds), power, alpha)) ** 2 - (0 if math.isnan(c.seed) else c.seed) / seeds
    if room <= 0:
        return None
    per_page = (0 if math.isnan(c.page) else c.page) + c.question / c.questions  # variance of one page's mean
    return math.ceil(max(1, math.ceil(per_page / (seeds * room))) * c.questions)  # at least one page
