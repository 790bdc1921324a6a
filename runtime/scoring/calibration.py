"""Threshold-free decisions: map fusion, and p-values from a product's own normal images.

Nobody tunes a score threshold. A product's normals play two roles (DESIGN.md section 2.5):

* the K **shots** build the patch memory. Held-out views of them (leave-one-image-out for K >= 2,
  leave-one-region-out for K = 1) fix the *score function*:
  - per component, the mean/std of its patch scores: maps become z-scores and are averaged, so no
    component's units dominate;
  - a border profile: mean/std of the fused map by distance to the image edge (a CNN's edge patches
    never look like interior ones; standardising by what normals score at the same distance removes
    that without blinding the border);
* every **other** normal image calibrates (split conformal): it is scored, once, as the line would
  score it, against the full memory. A frame's p-value is its rank among those n scores,
  ``p = (1 + #{calibration scores >= score}) / (n + 1)``; a normal frame then gets p <= budget with
  probability at most the budget, whatever the score's distribution. Images are counted, never
  augmented views (views of one image are not independent).

Resolution: n images give no p below 1/(n+1). Where that is above the line's budget a **Gumbel tail**
(type-I extreme value law, the law of a maximum over many patches; n >= ``MIN_TAIL_IMAGES``) extrapolates
beyond the largest calibration score: the *predictive* law of a new normal's score given the n scores,
the fit's own uncertainty included (lineguard.runtime.scoring.gumbel_tail), at most ``TAIL_DECADES``
decades below 1/(n+1); verdicts then say ``calibration: "tail"``, and `lineguard eval` reports the
observed false-reject rate at 1/5/10% budgets so the tail is only trusted where it held.
``needed_images(budget)`` says how many normals make the rank test alone resolve the budget.

Usage::

    cal = ConformalCalibration.from_scores(held_out_normal_scores)
    cal.p_value(7.3)                 # rank p-value (tail beyond the largest score)
    cal.status(budget=0.01)          # "conformal" or "tail"
    cal.decision_level(0.01)         # scores above this are NG
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np
from pydantic import Field

from lineguard.runtime.bundle import ComponentNorm
from lineguard.runtime.contract import CalibrationStatus
from lineguard.runtime.scoring.anomaly_maps import upsample
from lineguard.runtime.scoring.gumbel_tail import PredictiveGumbelTail

# The false-reject budget: the share of normal parts a line may reject. Defined once, here; the line config
# owns a line's value (``false_reject_budget``) and hands it to the Inspector; the CLI's --budget and the
# tooling take this default and this range.
DEFAULT_FALSE_REJECT_BUDGET = 0.01
FalseRejectBudget = Annotated[float, Field(gt=0.0, lt=0.5, allow_inf_nan=False)]
MIN_TAIL_IMAGES = 8  # fewer calibration images fit no tail: verdicts stay provisional
TAIL_DECADES = 2.0  # the tail extrapolates at most 100x below the rank test's resolution 1/(n+1)


def needed_images(budget: float) -> int:
    """Calibration images for the rank test alone to resolve ``budget``: 1/(n+1) <= budget."""
    return max(math.ceil(1.0 / budget - 1e-9) - 1, 1)


@dataclass(frozen=True)
class ConformalCalibration:
    """Split-conformal p-values from held-out normal image scores, with a Gumbel tail beyond them."""

    scores: np.ndarray  # (n,) sorted ascending
    tail: PredictiveGumbelTail | None

    @classmethod
    def from_scores(cls, scores: np.ndarray | list[float]) -> ConformalCalibration:
        ordered = np.sort(np.asarray(scores, dtype=np.float64))
        tail = PredictiveGumbelTail(ordered) if ordered.size >= MIN_TAIL_IMAGES else None
        return cls(scores=ordered, tail=tail)

    @property
    def n(self) -> int:
        return int(self.scores.size)

    @property
    def resolution(self) -> float:
        """The smallest p the rank test can give."""
        return 1.0 / (self.n + 1)

    def resolves(self, budget: float) -> bool:
        return self.resolution <= budget * (1 + 1e-9)

    def usable(self, budget: float) -> bool:
        """Can decide at ``budget``: by rank alone, or with a fitted tail."""
        return self.n > 0 and (self.resolves(budget) or self.tail is not None)

    def status(self, budget: float) -> CalibrationStatus:
        return "conformal" if self.resolves(budget) else "tail"

    def p_value(self, score: float) -> float:
        exceed = self.n - int(np.searchsorted(self.scores, score, side="left"))  # calibration scores >= score
        rank_p = (1 + exceed) / (self.n + 1)
        if exceed > 0 or self.tail is None:
            return rank_p
        return min(max(self.tail.p_value(score), self.tail_floor), rank_p)

    @property
    def tail_floor(self) -> float:
        """The smallest p the tail gives: ``TAIL_DECADES`` decades below the rank test's resolution."""
        return self.resolution * 10.0 ** (-TAIL_DECADES)

    def decision_level(self, budget: float) -> float:
        """Scores strictly above this get p <= budget (NG); the level for marking anomalous pixels."""
        allowed = math.floor(budget * (self.n + 1) + 1e-9) - 1  # calibration scores that may still exceed
        if allowed >= 0:
            return float(self.scores[self.n - 1 - allowed]) if allowed < self.n else -math.inf
        if self.tail is None or budget < self.tail_floor:
            return math.inf
        return max(float(self.scores[-1]), self.tail.quantile(budget))


FAMILIES = ("decoder", "memory", "statistics")


def component_family(name: str) -> str:
    return name.split("/", 1)[0]


def fuse_maps(maps: Mapping[str, np.ndarray], norms: Mapping[str, ComponentNorm], sigma: float,
              size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """z-normalise each component map, average within a family, average the families, smooth.

    ``maps`` are (B, h, w), at input resolution or (``size_hw`` given) at their own patch grid. The
    components fused are those ``norms`` holds (a product enrolled without a family has no norms for
    it); families (decoder, memory, statistics) weigh equally, however many stages each one has.
    The fusion is affine, and bilinear upsampling commutes with it: maps sharing a grid are weighted and
    summed there and upsampled once (three resizes a frame instead of five, the sums on small grids).
    """
    families: dict[str, list[str]] = {}
    for name in norms:
        families.setdefault(component_family(name), []).append(name)
    offset = 0.0
    by_grid: dict[tuple[int, ...], np.ndarray] = {}
    for members in families.values():
        for name in members:
            weight = 1.0 / (len(families) * len(members) * norms[name].std)
            offset -= weight * norms[name].mean
            grid = maps[name].shape
            by_grid[grid] = by_grid[grid] + weight * maps[name] if grid in by_grid else weight * maps[name]
    target = size_hw or max(by_grid, key=lambda grid: grid[1] * grid[2])[1:]
    fused = sum(upsample(m, target) if m.shape[1:] != tuple(target) else m for m in by_grid.values())
    return smooth((fused + offset).astype(np.float32), sigma)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return maps
    return np.stack([cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT) for m in maps])


def image_scores(fused: np.ndarray) -> np.ndarray:
    """Image score = the fused map's maximum, (B, H, W) -> (B,)."""
    return fused.reshape(len(fused), -1).max(axis=1)


@functools.lru_cache(maxsize=8)
def edge_distance(size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) int map, read-only (cached: every frame of a size asks for it): each pixel's distance in
    pixels to the nearest image edge."""
    h, w = size_hw
    ys = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    xs = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    distance = np.minimum(ys, xs)
    distance.flags.writeable = False
    return distance


@dataclass(frozen=True)
class BorderProfile:
    mean: np.ndarray  # (D,) indexed by edge distance
    std: np.ndarray

    @classmethod
    def fit(cls, fused: np.ndarray) -> BorderProfile:
        """Pool held-out normal maps (B, H, W) by edge distance; std floored at half the median std."""
        dist = np.broadcast_to(edge_distance(fused.shape[1:]), fused.shape).ravel()
        values = fused.ravel().astype(np.float64)
        count = np.bincount(dist)
        mean = np.bincount(dist, values) / count
        var = np.bincount(dist, values**2) / count - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std = np.maximum(std, 0.5 * float(np.median(std)) + 1e-6)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def apply(self, fused: np.ndarray) -> np.ndarray:
        dist = edge_distance(fused.shape[1:])
        return ((fused - self.mean[dist]) / self.std[dist]).astype(np.float32)


def component_norms(maps: Mapping[str, list[np.ndarray]]) -> dict[str, ComponentNorm]:
    """Patch-level mean/std of each component over held-out normal views."""
    norms = {}
    for name, chunks in maps.items():
        values = np.concatenate([c.ravel() for c in chunks])
        norms[name] = ComponentNorm(mean=float(values.mean()), std=float(max(values.std(), 1e-6)))
    return norms
