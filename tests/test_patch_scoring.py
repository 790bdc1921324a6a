"""The few-shot scorers' fast paths against their plain definitions (issue 17: scoring is a third of a
frame's CPU time, so it is computed in cache-sized BLAS chunks and OpenCV box filters; the numbers must
stay those of the textbook formulas)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from lineguard.runtime.bundle import ScoringSpec
from lineguard.runtime.scoring.patch_scoring import (
    NearestNeighbours,
    PatchMemory,
    greedy_coreset,
    local_patches,
)


def reference_local_average(features: np.ndarray) -> np.ndarray:
    """3x3 mean with edges replicated, written out: (B, C, H, W) -> (B*H*W, C)."""
    b, c, h, w = features.shape
    padded = np.pad(features.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    total = sum(padded[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return (total / 9.0).transpose(0, 2, 3, 1).reshape(b * h * w, c)


@pytest.mark.parametrize("shape", [(1, 40, 28, 28), (3, 112, 14, 14), (2, 1, 5, 7), (1, 320, 4, 4)])
def test_local_patches_is_the_edge_replicated_3x3_mean(shape: tuple[int, ...]) -> None:
    features = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(local_patches(features), reference_local_average(features), atol=2e-6)


@pytest.mark.parametrize("chunk", [1, 7, 256, 10_000])
def test_nearest_neighbours_match_brute_force_distances(chunk: int) -> None:
    rng = np.random.default_rng(1)
    memory = rng.standard_normal((500, 40)).astype(np.float32) * 3
    query = np.vstack([rng.standard_normal((300, 40)).astype(np.float32) * 3, memory[:20]])  # exact hits too
    want = cdist(query.astype(np.float64), memory.astype(np.float64)).min(axis=1)
    got = NearestNeighbours(memory, chunk=chunk).distance(query)
    assert got.dtype == np.float32 and got.shape == (320,)
    np.testing.assert_allclose(got[:300], want[:300], rtol=1e-4)
    # a patch in memory is at distance ~0: |q|^2 - 2 q.m + |m|^2 cancels in float32, leaving a few ulps of
    # |q|^2 + |m|^2 (whichever BLAS kernel the chunk size picks), whose square root is what remains
    ulps = 16 * np.finfo(np.float32).eps * (2 * np.einsum("ij,ij->i", memory[:20], memory[:20]))
    assert np.all(got[300:] <= np.sqrt(ulps)), (got[300:], np.sqrt(ulps))


def test_scores_of_a_stage_shared_by_memory_and_statistics() -> None:
    rng = np.random.default_rng(2)
    spec = ScoringSpec(memory_stages=["s2"], statistics_stages=["s1", "s2"], coreset_size=64)
    normals = {"s1": rng.standard_normal((4, 8, 12, 12)).astype(np.float32),
               "s2": rng.standard_normal((4, 16, 6, 6)).astype(np.float32)}
    memory = PatchMemory.build(normals, spec)
    frame = {k: rng.standard_normal((2, *v.shape[1:])).astype(np.float32) for k, v in normals.items()}
    maps = memory.score(frame)
    assert {k: v.shape for k, v in maps.items()} == {"memory/s2": (2, 6, 6), "statistics/s1": (2, 12, 12),
                                                     "statistics/s2": (2, 6, 6)}
    queries = reference_local_average(frame["s2"])
    want = cdist(queries, memory.arrays["memory/s2"].astype(np.float64)).min(axis=1).reshape(2, 6, 6)
    np.testing.assert_allclose(maps["memory/s2"], want, rtol=1e-4)
    centred = queries - memory.arrays["mean/s2"]
    mahalanobis = np.sqrt(np.einsum("ij,jk,ik->i", centred, memory.arrays["precision/s2"], centred)).reshape(2, 6, 6)
    np.testing.assert_allclose(maps["statistics/s2"], mahalanobis, rtol=1e-4)


def test_greedy_coreset_is_the_k_center_greedy_order() -> None:
    """Each pick is the point farthest from those already picked (PatchCore's coreset), checked against a
    direct evaluation of every distance; and the picks cover the set better than a random subset."""
    scale = np.r_[np.ones(8), np.full(8, 0.2)].astype(np.float32)  # an anisotropic cloud
    points = np.random.default_rng(3).standard_normal((600, 16)).astype(np.float32) * scale
    chosen = greedy_coreset(points, 40, seed=5)
    distances = cdist(points, points)
    for i in range(1, len(chosen)):
        assert chosen[i] == int(np.argmax(distances[:, chosen[:i]].min(axis=1)))
    covering = distances[:, chosen].min(axis=1).max()
    random_subset = np.random.default_rng(0).choice(len(points), 40, replace=False)
    assert covering < distances[:, random_subset].min(axis=1).max()
    assert greedy_coreset(points, 700).tolist() == list(range(600))  # fewer points than the size: all of them
