"""Proof by simulation that the intervals and tests of `alignbench.reporting.stats` hold what they claim: synthetic
studies with a known truth (`Scenario`), and how often each interval method covers it and each test rejects
(`simulate`; benchmarks/stats_simulation.py runs it, docs/statistics.md reports it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .stats import (
    CONFIDENCE,
    Interval,
    _percentile_interval,
    bootstrap,
    hierarchical_resample,
    holm,
    paired_difference,
    within_seed_bootstrap,
)


@dataclass(frozen=True)
class Scenario:
    """A synthetic study with known truth. Scores are Bernoulli (right or wrong): y ~ Bernoulli(Phi(eta)) with, on
    the probit scale, eta = mu[c] + a[c, s] + u[s, p] + g[c, s, p] + v[s, p, q]: connector c's training effect in
    seed s, the page's difficulty (shared by the connectors), how well c reads that page, and the question's
    difficulty (shared), normal with the standard deviations below. The true mean score of c is
    Phi(mu[c] / sqrt(1 + sd_seed^2 + sd_page^2 + sd_connector_page^2 + sd_question^2))."""

    seeds: int = 3
    pages: int = 300  # per seed
    questions: int = 1  # per page
    connectors: int = 4
    sd_seed: float = 0.15
    sd_page: float = 0.5
    sd_connector_page: float = 0.3
    sd_question: float = 0.5
    level: float = 0.5  # true mean score of connectors 1.. (0..1)
    difference: float = 0.0  # true mean score of connector 0 minus the others'

    def truth(self) -> np.ndarray:
        """True mean score of each connector [C]."""
        return np.array([self.level + self.difference] + [self.level] * (self.connectors - 1))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Scores [C, S, P, Q] of one synthetic study."""
        from scipy.special import ndtr, ndtri

        c, s, p, q = self.connectors, self.seeds, self.pages, self.questions
        sds = np.array([self.sd_seed, self.sd_page, self.sd_connector_page, self.sd_question])
        scale = math.sqrt(1 + float(sds @ sds))
        eta = (
            scale * ndtri(self.truth())[:, None, None, None]  # [C, 1, 1, 1]
            + self.sd_seed * rng.standard_normal((c, s, 1, 1))
            + self.sd_page * rng.standard_normal((1, s, p, 1))
            + self.sd_connector_page * rng.standard_normal((c, s, p, 1))
            + self.sd_question * rng.standard_normal((1, s, p, q))
        )
        return (rng.random(eta.shape) < ndtr(eta)).astype(float)


def _hierarchical_percentile(groups, pages, resamples, seed, with_p=False) -> Interval:
    draws = hierarchical_resample(groups, pages, resamples, seed)
    return _percentile_interval(float(np.mean([np.mean(g) for g in groups])), draws, CONFIDENCE, with_p)


def _hierarchical_se_t(groups, pages, resamples, seed, with_p=False) -> Interval:
    from scipy.stats import t

    estimate = float(np.mean([np.mean(g) for g in groups]))
    half = (
        t.ppf((1 + CONFIDENCE) / 2, max(1, len(groups) - 1))
        * hierarchical_resample(groups, pages, resamples, seed).std()
    )
    return Interval(estimate, estimate - half, estimate + half, seeds=len(groups))


# name -> interval(groups, pages, resamples, seed); "hierarchical" is the method `bootstrap` uses
METHODS = {
    "hierarchical": lambda g, p, r, s: bootstrap(g, s, pages=p, resamples=r),
    "within_seed": lambda g, p, r, s: within_seed_bootstrap(g, s, resamples=r),
    "questions_only": lambda g, p, r, s: bootstrap(g, s, resamples=r),
    "hierarchical_percentile": _hierarchical_percentile,
    "hierarchical_se_t": _hierarchical_se_t,
}


def simulate(
    scenario: Scenario,
    replications: int = 500,
    resamples: int = 1000,
    seed: int = 0,
    methods: tuple[str, ...] = ("hierarchical", "within_seed"),
    alpha: float = 0.05,
) -> dict:
    """Draw `replications` studies and measure, for each interval method, how often the 95 % interval covers the
    true mean of connector 0 and the true difference connector 0 - connector 1; with `bootstrap`'s method, how often
    the paired test of 0 vs 1 rejects at `alpha`, and the family-wise error over every pair of connectors (a
    rejection of a pair whose true difference is 0), with and without Holm's adjustment."""
    rng = np.random.default_rng(seed)
    truth = scenario.truth()
    pages = [np.repeat(np.arange(scenario.pages), scenario.questions)] * scenario.seeds
    pairs = [(i, j) for i in range(scenario.connectors) for j in range(i + 1, scenario.connectors)]
    null = np.array([truth[i] == truth[j] for i, j in pairs])
    covered = {m: np.zeros(2) for m in methods}  # [mean, difference] counts
    rejected, family, family_holm = 0, 0, 0
    for r in range(replications):
        y = scenario.draw(rng).reshape(scenario.connectors, scenario.seeds, -1)  # [C, S, P*Q]
        for m in methods:
            mean = METHODS[m](list(y[0]), pages, resamples, r)
            diff = METHODS[m](list(y[0] - y[1]), pages, resamples, r)
            covered[m] += [mean.low <= truth[0] <= mean.high, diff.low <= truth[0] - truth[1] <= diff.high]
        p = np.array([paired_difference(list(y[i]), list(y[j]), r, pages, resamples).p_value for i, j in pairs])
        rejected += p[0] <= alpha
        family += bool(np.any(p[null] <= alpha))
        family_holm += bool(np.any(holm(p)[null] <= alpha))
    return {
        "coverage_mean": {m: covered[m][0] / replications for m in methods},
        "coverage_difference": {m: covered[m][1] / replications for m in methods},
        "rejection": rejected / replications,
        "family_wise_error": family / replications,
        "family_wise_error_holm": family_holm / replications,
        "null_pairs": int(null.sum()),
        "replications": replications,
        "resamples": resamples,
    }
