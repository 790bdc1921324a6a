"""Few-shot patch scorers (no training): local nearest-neighbour memory and global feature statistics.

Two complementary views of "how unlike the enrolled normals is this patch":

* **memory** (PatchCore / WinCLIP style): each locally averaged patch feature's distance to its nearest
  neighbour in a coreset of the enrolled normals' patches. Sharp for foreign structure (cracks, pasted
  material, missing parts).
* **statistics** (PaDiM style, but position-free, as suits textures and loosely placed parts): the
  Mahalanobis distance of each patch to one Gaussian fitted to all normal patches of that stage
  (Ledoit-Wolf shrinkage, so k=1 image is enough). Sensitive to changes of texture statistics that a
  nearest neighbour forgives (stains, blur, slightly off colour or grain).

Usage::

    memory = PatchMemory.build(stage_features, scoring_spec)   # at enrolment
    maps = memory.score(stage_features)                         # {"memory/s2": (B, h, w), ...}
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.covariance import LedoitWolf

from lineguard.runtime.bundle import ScoringSpec


def local_average(features: np.ndarray) -> np.ndarray:
    """3x3 mean over the patch grid of (B, C, H, W) features, edges replicated (PatchCore's locality)."""
    padded = np.pad(features, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = features.shape[2:]
    total = np.zeros_like(features)
    for dy in range(3):
        for dx in range(3):
            total += padded[:, :, dy : dy + h, dx : dx + w]
    return total / 9.0


def as_patches(features: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B*H*W, C)."""
    b, c, h, w = features.shape
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(b * h * w, c))


def squared_norms(rows: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", rows, rows)


def nearest_distance(query: np.ndarray, memory: np.ndarray, memory_sq: np.ndarray | None = None,
                     chunk: int = 2048) -> np.ndarray:
    """Euclidean distance of each query row to its nearest memory row (one BLAS product per chunk)."""
    memory_sq = squared_norms(memory) if memory_sq is None else memory_sq
    out = np.empty(len(query), dtype=np.float32)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        d2 = q @ memory.T
        d2 *= -2.0
        d2 += memory_sq
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(axis=1) + squared_norms(q), 0.0))
    return out


def mahalanobis(query: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = query - mean
    return np.sqrt(np.maximum(((centred @ precision) * centred).sum(axis=1), 0.0)).astype(np.float32)


def greedy_coreset(patches: np.ndarray, size: int, seed: int = 0, projection_dim: int = 128) -> np.ndarray:
    """Indices of a k-center greedy coreset (PatchCore), on a random projection for speed."""
    if len(patches) <= size:
        return np.arange(len(patches))
    rng = np.random.default_rng(seed)
    if patches.shape[1] > projection_dim:
        proj = rng.standard_normal((patches.shape[1], projection_dim)).astype(np.float32) / np.sqrt(projection_dim)
        points = patches @ proj
    else:
        points = patches
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = rng.integers(len(points))
    min_dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for i in range(1, size):
        chosen[i] = int(np.argmax(min_dist))
        min_dist = np.minimum(min_dist, np.linalg.norm(points - points[chosen[i]], axis=1))
    return chosen


def _kept_patches(features: np.ndarray, exclude_box: tuple[float, float, float, float] | None) -> np.ndarray:
    if exclude_box is None:
        return as_patches(features)
    h, w = features.shape[2:]
    y0, y1, x0, x1 = exclude_box
    keep = np.ones((h, w), dtype=bool)
    keep[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = False
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1)[:, keep]).reshape(-1, features.shape[1])


class PatchMemory:
    """Per-product few-shot knowledge: a patch coreset per memory stage, a Gaussian per statistics stage."""

    def __init__(self, spec: ScoringSpec, arrays: Mapping[str, np.ndarray]) -> None:
        self.spec = spec
        self.arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        self._memory_sq = {s: squared_norms(self.arrays[f"memory/{s}"]) for s in spec.memory_stages}

    @classmethod
    def build(
        cls,
        features: Mapping[str, np.ndarray],
        spec: ScoringSpec,
        seed: int = 0,
        exclude_box: tuple[float, float, float, float] | None = None,
    ) -> PatchMemory:
        """Fit memory and statistics to (B, C, h, w) features of normal views.

        ``exclude_box`` = (y0, y1, x0, x1) as fractions of the grid leaves those patches out of every
        view: the leave-one-region-out calibration of a single reference image.
        """
        arrays: dict[str, np.ndarray] = {}
        for stage in spec.memory_stages:
            patches = _kept_patches(local_average(features[stage]), exclude_box)
            arrays[f"memory/{stage}"] = patches[greedy_coreset(patches, spec.coreset_size, seed)]
        for stage in spec.statistics_stages:
            patches = _kept_patches(local_average(features[stage]), exclude_box).astype(np.float64)
            fit = LedoitWolf(assume_centered=False).fit(patches)
            arrays[f"mean/{stage}"] = fit.location_.astype(np.float32)
            arrays[f"precision/{stage}"] = fit.precision_.astype(np.float32)
        return cls(spec, arrays)

    def component_names(self) -> list[str]:
        return [f"memory/{s}" for s in self.spec.memory_stages] + [f"statistics/{s}" for s in self.spec.statistics_stages]

    def score(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Patch-grid anomaly maps, one per component: name -> (B, h, w) float32."""
        maps: dict[str, np.ndarray] = {}
        for stage in self.spec.memory_stages:
            pooled = local_average(features[stage])
            b, _, h, w = pooled.shape
            maps[f"memory/{stage}"] = nearest_distance(
                as_patches(pooled), self.arrays[f"memory/{stage}"], self._memory_sq[stage]
            ).reshape(b, h, w)
        for stage in self.spec.statistics_stages:
            pooled = local_average(features[stage])
            b, _, h, w = pooled.shape
            dist = mahalanobis(as_patches(pooled), self.arrays[f"mean/{stage}"], self.arrays[f"precision/{stage}"])
            maps[f"statistics/{stage}"] = dist.reshape(b, h, w)
        return maps

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(self.arrays)
