"""The statistics behind the report, checked against a known truth: intervals on plain samples, the hierarchical
bootstrap's draws, the
intervals' coverage on simulated studies (docs/statistics.md), false positives after Holm, the earlier method's
under-coverage, variance components and the power they predict."""

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from alignbench.reporting.simulation import Scenario, simulate
from alignbench.reporting.stats import (
    Components,
    bootstrap,
    detectable_difference,
    hierarchical_resample,
    holm,
    paired_difference,
    questions_needed,
    seeds_needed,
    variance_components,
    within_seed_bootstrap,
)

COMMITTED = Scenario(seeds=3, pages=300, questions=1)  # the committed studies: 3 seeds, 300 one-question pages
CLUSTERED = Scenario(seeds=3, pages=60, questions=5)


def _pages(seeds: int, pages: int, questions: int) -> list:
    return [np.repeat(np.arange(pages), questions)] * seeds


# ---------------------------------------------------------------- intervals on plain samples


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(30), rng.random(3000)
    a, b = bootstrap([small]), bootstrap([large])
    assert a.low <= a.estimate <= a.high and b.low <= b.estimate <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 3
    assert bootstrap([np.full(10, 0.4)]).low == pytest.approx(0.4)  # no spread, no interval


def test_paired_difference_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(1)
    base = rng.random(400)
    shifted = paired_difference([base + 0.05 + rng.normal(0, 0.05, 400)], [base])
    assert shifted.low > 0 and shifted.p_value < 0.01 and shifted.excludes_zero()
    null = paired_difference([base + rng.normal(0, 0.05, 400)], [base])
    assert null.low < 0 < null.high and null.p_value > 0.05
    with pytest.raises(ValueError):
        paired_difference([base], [base[:10]])


def test_multi_seed_estimate_is_the_mean_of_seed_means():
    iv = bootstrap([np.ones(10), np.zeros(50)])
    assert iv.estimate == pytest.approx(0.5)


# ---------------------------------------------------------------- the hierarchical bootstrap


@pytest.mark.parametrize("questions", [False, True])
def test_hierarchical_resample_has_the_variance_of_its_three_levels(questions):
    rng = np.random.default_rng(0)
    s, p, q = 3, 20, 4
    y = rng.normal(0, 1, (s, p, q)) + rng.normal(0, 1, (s, p, 1)) + np.array([0.0, 1.0, 3.0])[:, None, None]
    draws = hierarchical_resample(list(y.reshape(s, -1)), _pages(s, p, q), 20000, seed=1, questions=questions)
    # Law of total variance over the seed draw, then over the page draw (population variances, ddof 0).
    page_means = y.mean(axis=2)  # [S, P]
    within = page_means.var(axis=1) / p + (y.var(axis=2).mean(axis=1) / (q * p) if questions else 0)  # [S]
    expected = (y.mean(axis=(1, 2)).var() + within.mean()) / s
    assert draws.var() == pytest.approx(expected, rel=0.05)
    assert draws.mean() == pytest.approx(y.mean(), abs=0.02)


def test_unequal_pages_are_drawn_whole():
    """Questions on a page that all score the same: resampling the questions of a drawn page changes nothing,
    whatever the page sizes."""
    rng = np.random.default_rng(2)
    page = np.repeat(np.arange(30), rng.integers(1, 6, 30))  # 30 pages of 1..5 questions
    scores = rng.random(30)[page]
    kept = hierarchical_resample([scores], [page], 500, seed=3, questions=False)
    redrawn = hierarchical_resample([scores], [page], 500, seed=3, questions=True)
    np.testing.assert_allclose(kept, redrawn)


def test_one_seed_interval_resamples_a_page_with_its_questions():
    rng = np.random.default_rng(4)
    scores = np.repeat(rng.integers(0, 2, 40).astype(float), 5)  # 40 pages, 5 questions that agree on each
    by_page = bootstrap([scores], pages=[np.repeat(np.arange(40), 5)])
    by_question = bootstrap([scores])
    ratio = (by_page.high - by_page.low) / (by_question.high - by_question.low)
    assert ratio == pytest.approx(math.sqrt(5), rel=0.2)
    assert by_page.seeds == 1 and not by_page.measures_training


def test_interval_over_seeds_is_the_t_interval_and_widens_when_seeds_disagree():
    base = np.random.default_rng(5).random(200)
    agree = bootstrap([base, base + 0.01, base - 0.01])
    disagree = bootstrap([base, base + 0.2, base - 0.2])
    assert agree.estimate == pytest.approx(base.mean()) and disagree.estimate == pytest.approx(base.mean())
    assert disagree.measures_training and disagree.seeds == 3
    half = student_t.ppf(0.975, 2) * 0.2 / math.sqrt(3)  # seed means m, m + 0.2, m - 0.2: s = 0.2
    assert disagree.high - disagree.estimate == pytest.approx(half)
    assert (disagree.high - disagree.low) > 10 * (agree.high - agree.low)
    iv = paired_difference([base + 0.05, base + 0.07, base + 0.06], [base, base, base])
    assert iv.p_value == pytest.approx(2 * student_t.sf(0.06 / (0.01 / math.sqrt(3)), 2))


def test_within_seed_bootstrap_is_the_earlier_scipy_method():
    from scipy.stats import bootstrap as scipy_bootstrap

    rng = np.random.default_rng(6)
    groups = [rng.random(150), rng.random(150) * 0.5]
    ours = within_seed_bootstrap(groups, resamples=20000)
    theirs = scipy_bootstrap(
        tuple(groups),
        lambda *g, axis=-1: np.mean([x.mean(axis=axis) for x in g], axis=0),
        n_resamples=20000,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(0),
    )
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.004)


# ---------------------------------------------------------------- coverage and false positives, simulated


@pytest.mark.parametrize("scenario", [COMMITTED, CLUSTERED], ids=["300x1", "60x5"])
def test_three_seed_intervals_cover_95_percent_and_holm_keeps_false_positives_at_5_percent(scenario):
    n = 2000
    res = simulate(scenario, replications=n, methods=("hierarchical",))
    assert 0.93 <= res["coverage_mean"]["hierarchical"] <= 0.97
    assert 0.93 <= res["coverage_difference"]["hierarchical"] <= 0.97
    assert 0.03 <= res["rejection"] <= 0.07  # one pair, no true difference
    # Six null pairs: unadjusted, some pair is "significant" far more often than 5 %; Holm brings it to 5 %
    # (within two Monte Carlo standard errors).
    assert res["family_wise_error"] > 0.15
    assert res["family_wise_error_holm"] <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / n)


def test_one_seed_interval_covers_with_pages_and_not_without():
    """No training variance to miss (sd_seed 0): the page bootstrap covers close to 95 % (a percentile interval
    over 60 pages runs a little under), treating each question as its own page does not."""
    scenario = Scenario(seeds=1, pages=60, questions=5, sd_seed=0.0, connectors=2)
    res = simulate(scenario, replications=500, resamples=500, methods=("hierarchical", "questions_only"))
    assert 0.92 <= res["coverage_mean"]["hierarchical"] <= 0.97
    assert 0.92 <= res["coverage_difference"]["hierarchical"] <= 0.97
    assert res["coverage_mean"]["questions_only"] < 0.91


def test_earlier_within_seed_method_under_covers_when_seeds_differ():
    scenario = Scenario(seeds=3, pages=40, questions=2, sd_seed=0.2, connectors=2)
    res = simulate(scenario, replications=500, resamples=200, methods=("hierarchical", "within_seed"))
    assert res["coverage_mean"]["within_seed"] < 0.85 and res["coverage_difference"]["within_seed"] < 0.85
    assert res["coverage_mean"]["hierarchical"] >= 0.93 and res["coverage_difference"]["hierarchical"] >= 0.93


def test_holm_adjusts_step_down():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    p = np.random.default_rng(7).random(12) ** 3
    adjusted = holm(p)
    assert np.all(adjusted >= p) and np.all(np.diff(adjusted[np.argsort(p)]) >= 0) and adjusted.max() <= 1


# ---------------------------------------------------------------- variance components and power


def _nested_normal(rng, seeds, sizes, sd):
    """Normal scores with seed, page and question standard deviations `sd`; sizes: questions of each page."""
    groups, pages = [], []
    for _ in range(seeds):
        page = np.repeat(np.arange(sizes.size), sizes)
        groups.append(
            sd[0] * rng.normal() + sd[1] * rng.normal(size=sizes.size)[page] + sd[2] * rng.normal(size=page.size)
        )
        pages.append(page)
    return groups, pages


def test_variance_components_recover_known_values_with_unequal_pages():
    rng = np.random.default_rng(8)
    sizes = rng.integers(1, 6, 30)  # 30 pages of 1..5 questions
    sd = np.array([0.3, 0.2, 0.5])
    est = np.array(
        [[(c := variance_components(*_nested_normal(rng, 6, sizes, sd))).seed, c.page, c.question] for _ in range(300)]
    ).mean(axis=0)
    np.testing.assert_allclose(est, sd**2, rtol=0.12)
    assert c.seeds == 6 and c.pages == 30 and c.questions == pytest.approx(sizes.mean())


def test_variance_components_say_what_they_cannot_measure():
    rng = np.random.default_rng(9)
    one_per_page = variance_components(*_nested_normal(rng, 4, np.ones(200, int), np.array([0.3, 0.2, 0.5])))
    assert math.isnan(one_per_page.page) and one_per_page.question == pytest.approx(0.29, rel=0.15)
    one_seed = variance_components(*_nested_normal(rng, 1, np.full(100, 3), np.array([0.3, 0.2, 0.5])))
    assert math.isnan(one_seed.seed) and not math.isnan(one_seed.page)


def test_detectable_difference_is_detected_with_80_percent_power():
    base = Scenario(seeds=5, pages=60, questions=5, sd_seed=0.05, connectors=2)
    many = dataclasses.replace(base, seeds=400)  # the components of the paired difference, estimated precisely
    y = many.draw(np.random.default_rng(10)).reshape(2, many.seeds, -1)
    c = variance_components(list(y[0] - y[1]), _pages(many.seeds, many.pages, many.questions))
    delta = detectable_difference(c, base.seeds, base.pages, base.questions)
    res = simulate(dataclasses.replace(base, difference=delta), replications=1000, methods=())
    assert 0.75 <= res["rejection"] <= 0.85


def test_seeds_and_questions_needed_are_the_fewest_that_reach_the_difference():
    c = Components(seed=0.002, page=0.01, question=0.15, seeds=3, pages=60, questions=5)
    s = seeds_needed(c, 0.05)
    assert detectable_difference(c, s, 60, 5) <= 0.05 < detectable_difference(c, s - 1, 60, 5)
    n = questions_needed(c, 0.1, seeds=5)
    assert detectable_difference(c, 5, n / 5, 5) <= 0.1 < detectable_difference(c, 5, n / 5 - 1, 5)
    assert questions_needed(c, 0.02, seeds=3) is None  # the seed variance alone: 5.65 x sqrt(0.002 / 3) > 0.02
    one_seed = dataclasses.replace(c, seed=float("nan"), seeds=1)  # normal test, z(0.975) + z(0.8) = 2.80
    assert detectable_difference(one_seed, 1, 60, 5) == pytest.approx(
        2.8016 * math.sqrt(0.01 / 60 + 0.15 / 300), rel=1e-3
    )
