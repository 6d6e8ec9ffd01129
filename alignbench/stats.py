"""Confidence intervals and paired significance tests on per-sample scores, through `scipy.stats.bootstrap`.

Scores come in *groups*, one per seed: each seed has its own evaluation set, so resampling happens within a
group and the statistic is the mean over groups of the group means. Differences between two connectors are
paired: both answered the same questions, so the per-question difference is resampled, which removes the
variance the two share (question difficulty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    p_value: float | None = None  # two-sided bootstrap p-value of "the estimate is 0" (differences only)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "p_value": self.p_value}


def _mean_of_means(*groups, axis=-1):
    return np.mean([np.mean(g, axis=axis) for g in groups], axis=0)


def bootstrap(groups: list, seed: int = 0, confidence: float = CONFIDENCE, with_p: bool = False) -> Interval:
    """Percentile bootstrap interval of the mean over groups of the group means."""
    from scipy.stats import bootstrap as scipy_bootstrap

    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        return Interval(float("nan"), float("nan"), float("nan"))
    estimate = float(_mean_of_means(*groups))
    if all(g.size < 2 or np.all(g == g[0]) for g in groups):  # no spread: the interval is the point itself
        return Interval(estimate, estimate, estimate, (1.0 if estimate == 0 else 0.0) if with_p else None)
    res = scipy_bootstrap(tuple(groups), _mean_of_means, n_resamples=RESAMPLES, confidence_level=confidence,
                          method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    p = None
    if with_p:
        dist = res.bootstrap_distribution
        p = float(min(1.0, 2 * min(np.mean(dist <= 0), np.mean(dist >= 0))))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), p)


def paired_difference(a: list, b: list, seed: int = 0) -> Interval:
    """Mean difference a - b over the same samples (per group, aligned), with its interval and p-value."""
    diffs = []
    for ga, gb in zip(a, b):
        ga, gb = np.asarray(ga, dtype=float), np.asarray(gb, dtype=float)
        if ga.shape != gb.shape:
            raise ValueError(f"paired groups differ in size ({ga.size} vs {gb.size})")
        diffs.append(ga - gb)
    return bootstrap(diffs, seed=seed, with_p=True)
