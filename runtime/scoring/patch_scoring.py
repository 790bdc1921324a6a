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

import cv2
import numpy as np
from sklearn.covariance import LedoitWolf

from lineguard.runtime.bundle import ScoringSpec

CV_MAX_CHANNELS = 128  # OpenCV 5's CV_CN_MAX: a cv2 filter takes at most this many channels at once


def local_patches(features: np.ndarray) -> np.ndarray:
    """The locally averaged patches of (B, C, H, W) features as rows, (B*H*W, C) float32: one OpenCV box
    filter per image in channels-last layout (what the scorers read), no separate transpose."""
    b, c, h, w = features.shape
    out = np.empty((b, h, w, c), dtype=np.float32)
    channels_last = features.transpose(0, 2, 3, 1).astype(np.float32, copy=False)
    for i in range(b):
        for start in range(0, c, CV_MAX_CHANNELS):
            stop = start + CV_MAX_CHANNELS
            out[i, :, :, start:stop] = cv2.blur(
                np.ascontiguousarray(channels_last[i, :, :, start:stop]), (3, 3),
                borderType=cv2.BORDER_REPLICATE).reshape(h, w, -1)
    return out.reshape(b * h * w, c)


def squared_norms(rows: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", rows, rows)


class NearestNeighbours:
    """Euclidean distance of query rows to their nearest row of a fixed memory.

    ``|q - m|^2 = |q|^2 + (|m|^2 - 2 q.m)``: the bracket is one BLAS product of the queries, with a
    column of ones appended, against the memory stored once as ``[-2 m, |m|^2]`` (no broadcast pass over
    the (queries x memory) matrix), taken in chunks of queries small enough to stay in cache.
    """

    def __init__(self, memory: np.ndarray, chunk: int = 256) -> None:
        memory = np.asarray(memory, dtype=np.float32)
        self._augmented = np.ascontiguousarray(np.vstack([-2.0 * memory.T, squared_norms(memory)[None, :]]))
        self.chunk = chunk

    def distance(self, query: np.ndarray) -> np.ndarray:
        query = np.asarray(query, dtype=np.float32)
        augmented_query = np.empty((len(query), query.shape[1] + 1), dtype=np.float32)
        augmented_query[:, :-1] = query
        augmented_query[:, -1] = 1.0
        best = np.empty(len(query), dtype=np.float32)
        for start in range(0, len(query), self.chunk):
            np.min(augmented_query[start : start + self.chunk] @ self._augmented, axis=1,
                   out=best[start : start + self.chunk])
        return np.sqrt(np.maximum(best + squared_norms(query), 0.0))


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
    points = np.ascontiguousarray(points, dtype=np.float32)
    # squared distances as |p|^2 - 2 p.c + |c|^2: one matrix-vector product a step, no (N, D) temporary
    # (the farthest point is the same in squared distance)
    norms = squared_norms(points)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = rng.integers(len(points))
    min_dist = np.full(len(points), np.inf, dtype=np.float32)
    step = np.empty(len(points), dtype=np.float32)
    for i in range(size):
        if i:
            chosen[i] = int(np.argmax(min_dist))
        centre = points[chosen[i]]
        np.matmul(points, -2.0 * centre, out=step)
        step += norms
        step += norms[chosen[i]]
        np.minimum(min_dist, step, out=min_dist)
    return chosen


def _kept_patches(features: np.ndarray, exclude_box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Locally averaged patches of (B, C, H, W) features, less those inside ``exclude_box``."""
    patches = local_patches(features)
    if exclude_box is None:
        return patches
    b, c, h, w = features.shape
    y0, y1, x0, x1 = exclude_box
    keep = np.ones((h, w), dtype=bool)
    keep[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = False
    return np.ascontiguousarray(patches.reshape(b, h, w, c)[:, keep]).reshape(-1, c)


class PatchMemory:
    """Per-product few-shot knowledge: a patch coreset per memory stage, a Gaussian per statistics stage."""

    def __init__(self, spec: ScoringSpec, arrays: Mapping[str, np.ndarray]) -> None:
        self.spec = spec
        self.arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        self._neighbours = {s: NearestNeighbours(self.arrays[f"memory/{s}"]) for s in spec.memory_stages}

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
            patches = _kept_patches(features[stage], exclude_box)
            arrays[f"memory/{stage}"] = patches[greedy_coreset(patches, spec.coreset_size, seed)]
        for stage in spec.statistics_stages:
            patches = _kept_patches(features[stage], exclude_box).astype(np.float64)
            fit = LedoitWolf(assume_centered=False).fit(patches)
            arrays[f"mean/{stage}"] = fit.location_.astype(np.float32)
            arrays[f"precision/{stage}"] = fit.precision_.astype(np.float32)
        return cls(spec, arrays)

    def component_names(self) -> list[str]:
        return [f"memory/{s}" for s in self.spec.memory_stages] + [f"statistics/{s}" for s in self.spec.statistics_stages]

    def score(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Patch-grid anomaly maps, one per component: name -> (B, h, w) float32."""
        maps: dict[str, np.ndarray] = {}
        pooled: dict[str, np.ndarray] = {}  # a stage scored by memory and statistics is pooled once
        for stage in dict.fromkeys(self.spec.memory_stages + self.spec.statistics_stages):
            pooled[stage] = local_patches(features[stage])
        for stage in self.spec.memory_stages:
            b, _, h, w = features[stage].shape
            maps[f"memory/{stage}"] = self._neighbours[stage].distance(pooled[stage]).reshape(b, h, w)
        for stage in self.spec.statistics_stages:
            b, _, h, w = features[stage].shape
            dist = mahalanobis(pooled[stage], self.arrays[f"mean/{stage}"], self.arrays[f"precision/{stage}"])
            maps[f"statistics/{stage}"] = dist.reshape(b, h, w)
        return maps

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(self.arrays)
