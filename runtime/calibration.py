"""Threshold-free decisions: map fusion, and p-values from a product's own enrolled normals.

Nobody tunes a score threshold. Enrolment scores held-out views of the reference images (each view
against a memory that does not contain it: leave-one-image-out for k >= 2, leave-one-region-out for
k = 1) and keeps

* per component, the mean/std of its patch scores on those normal views: maps become z-scores and are
  averaged, so no component's units dominate;
* a border profile: mean/std of the fused map by distance to the image edge. A CNN's patches near the
  edge never look like interior ones (padding), so an unseen part's borders score high on every
  memory; standardising each pixel by what normal parts score at the same distance from the edge
  removes that without blinding the border;
* the distribution of the fused image score (max of the smoothed map) over the held-out views, as a
  Gumbel (type-I extreme value) law fitted by moments. Image scores are maxima over many patches, the
  case the Gumbel law describes; a fitted tail extrapolates below the 1/(n+1) floor of a plain rank
  test, which is what lets k = 1 (a dozen calibration views) still say NG at a 1% false-reject budget.

A frame is NG when its p-value under that law falls below the line's false-reject budget.

Usage::

    fit = GumbelFit.from_scores(normal_view_scores)
    fit.p_value(7.3)      # P(score >= 7.3 | normal)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.runtime.bundle import ComponentNorm

EULER_GAMMA = 0.5772156649015329
MIN_SCALE = 0.05  # in z units: keeps a near-constant calibration set from producing a zero-width law


@dataclass(frozen=True)
class GumbelFit:
    location: float
    scale: float

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> GumbelFit:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            raise ValueError("a Gumbel fit needs at least two calibration scores")
        scale = max(float(scores.std(ddof=1)) * math.sqrt(6.0) / math.pi, MIN_SCALE)
        location = float(scores.mean()) - EULER_GAMMA * scale
        return cls(location=location, scale=scale)

    def p_value(self, score: float) -> float:
        """Survival function: probability that a normal image scores at least ``score``."""
        z = (score - self.location) / self.scale
        return float(-math.expm1(-math.exp(-z))) if z > -30 else 1.0

    def quantile(self, p: float) -> float:
        """Score whose survival probability is ``p``."""
        return self.location - self.scale * math.log(-math.log1p(-p))


def component_family(name: str) -> str:
    return name.split("/", 1)[0]


def fuse_maps(maps: Mapping[str, np.ndarray], norms: Mapping[str, ComponentNorm], sigma: float) -> np.ndarray:
    """z-normalise each component map, average within a family, average the families, smooth.

    ``maps`` are (B, H, W) at input resolution. Families (decoder, memory, statistics) weigh equally,
    however many stages each one has.
    """
    families: dict[str, list[np.ndarray]] = {}
    for name, values in maps.items():
        norm = norms[name]
        families.setdefault(component_family(name), []).append((values - norm.mean) / norm.std)
    fused = np.mean([np.mean(members, axis=0) for members in families.values()], axis=0).astype(np.float32)
    return smooth(fused, sigma)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return maps
    return np.stack([cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT) for m in maps])


def image_scores(fused: np.ndarray) -> np.ndarray:
    """Image score = the fused map's maximum, (B, H, W) -> (B,)."""
    return fused.reshape(len(fused), -1).max(axis=1)


def edge_distance(size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) int map: each pixel's distance in pixels to the nearest image edge."""
    h, w = size_hw
    ys = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    xs = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    return np.minimum(ys, xs)


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
