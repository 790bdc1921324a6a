"""Tail model and map fusion behind the threshold-free verdict."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.runtime.bundle import ComponentNorm
from lineguard.runtime.calibration import GumbelFit, fuse_maps, image_scores


def test_gumbel_p_values_fall_with_the_score() -> None:
    fit = GumbelFit.from_scores(np.random.default_rng(0).gumbel(3.0, 0.5, 400))
    assert fit.location == pytest.approx(3.0, abs=0.15) and fit.scale == pytest.approx(0.5, abs=0.1)
    ps = [fit.p_value(s) for s in (1.0, 3.0, 5.0, 8.0)]
    assert ps == sorted(ps, reverse=True) and ps[0] > 0.99 and ps[-1] < 1e-3


def test_quantile_inverts_p_value() -> None:
    fit = GumbelFit(2.0, 0.7)
    for p in (0.5, 0.01, 1e-4):
        assert fit.p_value(fit.quantile(p)) == pytest.approx(p, rel=1e-6)


def test_small_calibration_sets_still_reach_one_percent() -> None:
    """A rank test on 12 scores cannot go below 1/13; the fitted tail can."""
    scores = np.random.default_rng(1).normal(2.0, 0.3, 12)
    fit = GumbelFit.from_scores(scores)
    assert fit.p_value(scores.max() + 2.0) < 0.01


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
