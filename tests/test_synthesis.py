"""Anomaly simulation: every label mask is exactly where the image was changed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineguard.export.synthesis import cut_paste_poisson, scratch, stain, synthesize, texture_change
from lineguard.export.textures import FAMILIES, generate_texture


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return generate_texture("weave", rng, 224), generate_texture("grain", rng, 224)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 0


@pytest.mark.parametrize("seed", range(12))
def test_cut_paste_mask_is_the_pasted_region(pair, seed: int) -> None:
    target, source = pair
    sample = cut_paste_poisson(target, source, np.random.default_rng(seed))
    assert sample.image.shape == target.shape and sample.image.dtype == np.uint8
    mask = sample.mask.astype(bool)
    assert 0.002 < mask.mean() < 0.5
    changed = _changed(sample.image, target)
    # Poisson blending writes only inside the pasted region (OpenCV erodes the mask's rim by a pixel)
    outside = changed & ~cv2.dilate(sample.mask, np.ones((3, 3), np.uint8)).astype(bool)
    assert outside.sum() == 0
    # ... and the pasted region is really changed, not an invisible label
    assert changed[mask].mean() > 0.5


def test_cut_paste_honours_the_requested_centre(pair) -> None:
    target, source = pair
    sample = cut_paste_poisson(target, source, np.random.default_rng(0), 0.1, 0.12, center=(37, 187))
    ys, xs = np.nonzero(sample.mask)
    assert abs(xs.mean() - 37) < 12 and abs(ys.mean() - 187) < 12


@pytest.mark.parametrize("make", [scratch, stain, texture_change])
def test_other_kinds_change_only_inside_their_mask(pair, make) -> None:
    target, _ = pair
    for seed in range(5):
        sample = make(target, np.random.default_rng(seed))
        changed = _changed(sample.image, target)
        assert sample.mask.any()
        assert not (changed & ~sample.mask.astype(bool)).any()


def test_synthesize_mixes_kinds(pair) -> None:
    target, source = pair
    rng = np.random.default_rng(3)
    kinds = {synthesize(target, source, rng).kind for _ in range(40)}
    assert kinds == {"cut-paste", "scratch", "stain", "texture"}


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_textures_are_deterministic(family: str) -> None:
    a = generate_texture(family, np.random.default_rng(5), 96)
    b = generate_texture(family, np.random.default_rng(5), 96)
    assert a.shape == (96, 96, 3) and np.array_equal(a, b) and a.std() > 5
