"""Gumbel tails of image scores: what a normal part scores beyond the largest calibration score.

An image score is the maximum of a map over many patches, and the type-I extreme value law (Gumbel) is
the law of such maxima. Two uses:

* ``GumbelFit``: the plug-in law, location and scale fitted by moments. It serves where no held-out
  normals exist yet (the shots' augmented views, ``calibration: provisional``).
* ``PredictiveGumbelTail``: the tail that decides ``calibration: tail`` verdicts (n held-out images,
  1/(n+1) above the budget). A law fitted to n scores underestimates its own tail: plugged in, a
  moment-fitted Gumbel on 20 Gumbel scores rejects about 2% of normals at a 1% budget. The predictive
  law counts the fit's own uncertainty instead: for moment estimates (m, s) of a location-scale law,
  ``T = (X_new - m) / s`` has a law that depends on n alone (a pivot), so

      P(new normal >= m + t s) = E[ sf(M + t S) ]     (M, S: the same estimates on n standard Gumbels)

  exactly, for any true location and scale. The expectation is taken over a seeded simulation of
  ``SIMULATED_SAMPLES`` calibration sets (the same sets for every product with n scores, so p-values are
  reproducible); averaging the exact survival function instead of counting exceedances keeps it smooth
  and accurate far into the tail. No closed form exists for moment estimates, hence the simulation.

A normal part is then rejected at a budget b with probability b when its scores follow a Gumbel law
(``tests/test_calibration.py``), marginally over the calibration draw, like the rank test; `eval`
reports how that held on real held-out normals.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

EULER_GAMMA = 0.5772156649015329
MIN_SCALE = 0.05  # in z units: keeps a near-constant calibration set from producing a zero-width law
SIMULATED_SAMPLES = 16384  # quantiles of the predictive law to ~0.5% (seed to seed) at n = 8..50
SIMULATION_SEED = 20261201
_CHUNK_VALUES = 1 << 21  # simulated scores drawn at once: 16 MB, whatever n


def _moment_fit(scores: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Method-of-moments Gumbel location and scale of ``scores`` along ``axis`` (no scale floor)."""
    scale = scores.std(ddof=1, axis=axis) * math.sqrt(6.0) / math.pi
    return scores.mean(axis=axis) - EULER_GAMMA * scale, scale


def gumbel_sf(z: np.ndarray | float) -> np.ndarray:
    """Survival function of the standard Gumbel law, accurate in the far tail."""
    return -np.expm1(-np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class GumbelFit:
    location: float
    scale: float

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> GumbelFit:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            raise ValueError("a Gumbel fit needs at least two calibration scores")
        _, scale = _moment_fit(scores)
        scale = max(float(scale), MIN_SCALE)  # the location follows the floored scale
        return cls(location=float(scores.mean()) - EULER_GAMMA * scale, scale=scale)

    def p_value(self, score: float) -> float:
        """Survival function: probability that a normal image scores at least ``score``."""
        z = (score - self.location) / self.scale
        return float(gumbel_sf(z)) if z > -30 else 1.0

    def quantile(self, p: float) -> float:
        """Score whose survival probability is ``p``."""
        return self.location - self.scale * math.log(-math.log1p(-p))


@functools.lru_cache(maxsize=32)
def _simulated_fits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Moment estimates (M, S) on ``SIMULATED_SAMPLES`` seeded sets of n standard Gumbel scores."""
    rng = np.random.default_rng([SIMULATION_SEED, n])
    locations, scales = [], []
    chunk = max(_CHUNK_VALUES // n, 1)
    for start in range(0, SIMULATED_SAMPLES, chunk):
        rows = min(chunk, SIMULATED_SAMPLES - start)
        location, scale = _moment_fit(rng.gumbel(size=(rows, n)), axis=1)
        locations.append(location)
        scales.append(scale)
    return np.concatenate(locations), np.concatenate(scales)


class PredictiveGumbelTail:
    """The predictive law of a new normal's score, given n calibration scores assumed Gumbel."""

    def __init__(self, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            raise ValueError("a Gumbel tail needs at least two calibration scores")
        self.fit = GumbelFit.from_scores(scores)
        self.n = int(scores.size)
        # simulated here, where a product's model loads (12-60 ms for n = 20-99, once per n), not on the
        # first frame that scores beyond the largest calibration score
        self._simulated = _simulated_fits(self.n)
        self._levels: dict[float, float] = {}

    def _pivot_sf(self, t: float) -> float:
        """P(T >= t) for the pivot T = (X_new - location) / scale."""
        locations, scales = self._simulated
        return float(gumbel_sf(locations + t * scales).mean())

    def p_value(self, score: float) -> float:
        """Probability that a further normal image scores at least ``score``."""
        t = (score - self.fit.location) / self.fit.scale
        return self._pivot_sf(t) if t > -30 else 1.0

    def quantile(self, p: float) -> float:
        """Score whose predictive survival probability is ``p`` (cached: the decision level asks per frame)."""
        if p not in self._levels:
            # sf(t) falls from ~1 at t = -3 to below any budget the line config allows (> 0) far out
            t = brentq(lambda t: self._pivot_sf(t) - p, -3.0, 200.0, xtol=1e-6)
            self._levels[p] = self.fit.location + t * self.fit.scale
        return self._levels[p]
