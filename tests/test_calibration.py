"""Tail model and map fusion behind the threshold-free verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, gumbel_r, lognorm

from lineguard.runtime.bundle import ComponentNorm
from lineguard.runtime.scoring.calibration import (
    ConformalCalibration,
    fuse_maps,
    image_scores,
    needed_images,
)
from lineguard.runtime.scoring.gumbel_tail import GumbelFit, PredictiveGumbelTail
from lineguard.runtime.scoring.product_model import is_ng


def test_gumbel_p_values_fall_with_the_score() -> None:
    fit = GumbelFit.from_scores(np.random.default_rng(0).gumbel(3.0, 0.5, 400))
    assert fit.location == pytest.approx(3.0, abs=0.15) and fit.scale == pytest.approx(0.5, abs=0.1)
    ps = [fit.p_value(s) for s in (1.0, 3.0, 5.0, 8.0)]
    assert ps == sorted(ps, reverse=True) and ps[0] > 0.99 and ps[-1] < 1e-3


def test_quantile_inverts_p_value() -> None:
    fit = GumbelFit(2.0, 0.7)
    for p in (0.5, 0.01, 1e-4):
        assert fit.p_value(fit.quantile(p)) == pytest.approx(p, rel=1e-6)


def test_rank_p_values_have_the_resolution_of_their_sample() -> None:
    scores = np.arange(1.0, 20.0)  # n = 19 -> resolution 1/20
    cal = ConformalCalibration.from_scores(scores)
    assert cal.p_value(0.0) == 1.0
    assert cal.p_value(19.0) == pytest.approx(2 / 20)  # one calibration score >= 19 -> (1 + 1) / 20
    assert cal.p_value(10.5) == pytest.approx((1 + 9) / 20)
    assert cal.resolves(0.05) and not cal.resolves(0.04)
    assert cal.status(0.05) == "conformal" and cal.status(0.01) == "tail"
    assert needed_images(0.01) == 99 and needed_images(0.05) == 19


def test_no_p_value_below_the_resolution_without_a_tail() -> None:
    cal = ConformalCalibration.from_scores(np.arange(5.0))  # n = 5 < MIN_TAIL_IMAGES: no tail
    assert cal.tail is None and not cal.usable(0.01)
    assert cal.p_value(1e9) == pytest.approx(1 / 6)


def test_tail_extrapolates_a_bounded_distance_beyond_the_largest_score() -> None:
    scores = np.random.default_rng(1).normal(2.0, 0.3, 16)
    cal = ConformalCalibration.from_scores(scores)
    assert cal.tail is not None and cal.status(0.01) == "tail"
    assert cal.p_value(scores.max() + 2.0) < 0.01  # a clear outlier can be NG at 1%
    assert cal.p_value(1e9) == pytest.approx(cal.resolution / 100)  # never a p like 1e-47
    assert cal.p_value(float(np.median(scores))) == pytest.approx((1 + 8) / 17)  # inside the data: ranks


@pytest.mark.parametrize("budget, n", [(0.05, 19), (0.05, 40), (0.1, 30), (0.02, 60)])
def test_decision_level_separates_ng_from_ok(budget: float, n: int) -> None:
    cal = ConformalCalibration.from_scores(np.random.default_rng(n).gumbel(0, 1, n))
    level = cal.decision_level(budget)
    assert is_ng(cal.p_value(level + 1e-9), budget) and not is_ng(cal.p_value(level), budget)


def _false_reject_rates(n: int, budget: float, law: str, draws: int = 1500) -> np.ndarray:
    """Chance that a further normal of ``law`` is rejected, computed exactly from the law, for each of
    ``draws`` calibration draws of n normals."""
    rng = np.random.default_rng(n)
    draw, sf = ((lambda: rng.gumbel(3.0, 0.7, n), lambda q: gumbel_r.sf(q, 3.0, 0.7)) if law == "gumbel"
                else (lambda: rng.lognormal(0.0, 0.5, n), lambda q: lognorm.sf(q, 0.5)))
    return np.array([sf(ConformalCalibration.from_scores(draw()).decision_level(budget)) for _ in range(draws)])


@pytest.mark.parametrize("law", ["gumbel", "lognormal"])
@pytest.mark.parametrize("n, budget", [(19, 0.05), (49, 0.02), (99, 0.01)])
def test_rank_test_keeps_the_budget_whatever_the_law(n: int, budget: float, law: str) -> None:
    """Split conformal: calibrate on n normals; a further normal of the same law is rejected with
    probability at most the budget (averaged over calibration draws), for any law."""
    rates = _false_reject_rates(n, budget, law)
    assert rates.mean() <= budget + 3 * rates.std() / np.sqrt(rates.size)
    assert rates.mean() > budget / 10  # and the decision is not simply "always OK"


@pytest.mark.parametrize("n", [8, 13, 16, 20, 40])
def test_predictive_tail_spends_exactly_the_budget_on_gumbel_scores(n: int) -> None:
    """Where 1/(n+1) is above the budget the predictive Gumbel tail decides. On scores of the law it
    assumes it rejects a further normal with probability the budget: not more (a plug-in fit of the same
    law rejects 1.3-2x the budget), and not much less (a cautious tail would only buy misses)."""
    budget = 0.01
    rates = _false_reject_rates(n, budget, "gumbel", draws=4000)  # the rates are skewed: many draws
    spread = 3 * rates.std() / np.sqrt(rates.size)
    assert budget - spread <= rates.mean() <= budget + spread
    rng = np.random.default_rng(n)
    plug_in = [gumbel_r.sf(GumbelFit.from_scores(rng.gumbel(3.0, 0.7, n)).quantile(budget), 3.0, 0.7)
               for _ in range(1500)]
    assert np.mean(plug_in) > 1.25 * budget


@pytest.mark.parametrize("n", [8, 16])
def test_predictive_tail_on_a_heavier_law_stays_near_the_budget(n: int) -> None:
    """Log-normal scores (a heavier tail than the Gumbel the tail assumes) cost at most twice the budget
    (about 1.5x in this simulation); `eval` reports the observed rate on real held-out normals."""
    rates = _false_reject_rates(n, 0.01, "lognormal")
    assert 0.01 <= rates.mean() <= 0.02


def test_predictive_tail_inverts_and_repeats() -> None:
    scores = np.random.default_rng(3).gumbel(2.0, 0.4, 16)
    tail = PredictiveGumbelTail(scores)
    for p in (0.05, 0.01, 1e-3):
        assert tail.p_value(tail.quantile(p)) == pytest.approx(p, rel=1e-4)
    assert tail.p_value(3.5) == PredictiveGumbelTail(scores.copy()).p_value(3.5)  # seeded: reproducible
    assert tail.quantile(0.01) > tail.fit.quantile(0.01)  # wider than the plug-in law


def test_no_decision_level_below_the_tail_floor() -> None:
    cal = ConformalCalibration.from_scores(np.random.default_rng(4).gumbel(0, 1, 16))
    assert cal.decision_level(cal.tail_floor / 2) == np.inf
    assert np.isfinite(cal.decision_level(0.01))


def test_observed_false_rejects_within_a_binomial_bound() -> None:
    """One line, counted as `eval` counts: n = 39 calibration normals, 400 further normals judged."""
    rng = np.random.default_rng(5)
    cal = ConformalCalibration.from_scores(rng.gumbel(3.0, 0.7, 39))
    rejects = sum(is_ng(cal.p_value(s), 0.05) for s in rng.gumbel(3.0, 0.7, 400))
    # the rank test's conditional rate given one calibration draw is Beta-distributed around 0.05; a
    # binomial tail at twice the budget is a bound that a broken calibration (e.g. views) crosses
    assert binom.sf(rejects - 1, 400, 0.10) > 1e-3


def test_needs_two_scores() -> None:
    with pytest.raises(ValueError):
        GumbelFit.from_scores(np.array([1.0]))


def test_fusion_weighs_families_not_stages() -> None:
    maps = {"decoder": np.zeros((1, 8, 8), np.float32), "memory/s2": np.ones((1, 8, 8), np.float32) * 4,
            "memory/s3": np.ones((1, 8, 8), np.float32) * 4}
    norms = {k: ComponentNorm(mean=0.0, std=2.0) for k in maps}
    fused = fuse_maps(maps, norms, sigma=0)
    assert fused.shape == (1, 8, 8)
    assert np.allclose(fused, (0 + 2) / 2)
    assert image_scores(fused).tolist() == [pytest.approx(1.0)]
