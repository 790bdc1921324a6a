"""Procedural normal images: the default training set when no ``--normals`` are given, and the demo's parts.

No torch and no downloads: numpy + OpenCV only, deterministic for a seed.

Usage::

    rng = np.random.default_rng(0)
    img = generate_texture("weave", rng, size=256)      # uint8 BGR (256, 256, 3)
    images = default_training_set(count=240, seed=0)    # mixed families
"""

from __future__ import annotations

import cv2
import numpy as np

FAMILIES = ("grain", "weave", "wood", "cells", "brushed", "part")


def _noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth noise in [0, 1]: white noise blurred at a scale (in pixels)."""
    n = rng.standard_normal((size, size)).astype(np.float32)
    if scale > 0.5:
        n = cv2.GaussianBlur(n, (0, 0), scale)
    n -= n.min()
    return n / max(float(n.max()), 1e-6)


def _colourise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dark = rng.uniform(20, 120, 3)
    light = np.clip(dark + rng.uniform(60, 140, 3), 0, 255)
    img = dark[None, None, :] + gray[:, :, None] * (light - dark)[None, None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_texture(family: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if family == "grain":
        g = 0.6 * _noise(rng, size, rng.uniform(0.6, 2.0)) + 0.4 * _noise(rng, size, rng.uniform(3, 8))
    elif family == "weave":
        f = rng.uniform(12, 30)
        theta = rng.uniform(0, np.pi)
        u = np.cos(theta) * xx + np.sin(theta) * yy
        v = -np.sin(theta) * xx + np.cos(theta) * yy
        g = 0.5 + 0.25 * np.sin(2 * np.pi * f * u) * np.sign(np.sin(2 * np.pi * f * v / 2)) + 0.25 * np.sin(2 * np.pi * f * v)
        g = 0.8 * g + 0.2 * _noise(rng, size, 1.0)
    elif family == "wood":
        cx, cy = rng.uniform(-1, 2, 2)
        r = np.sqrt((xx - cx) ** 2 + 0.2 * (yy - cy) ** 2)
        g = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(15, 40) * (r + 0.05 * _noise(rng, size, 12)))
        g = 0.85 * g + 0.15 * _noise(rng, size, 1.0)
    elif family == "cells":
        n = int(rng.integers(40, 140))
        pts = rng.uniform(0, 1, (n, 2)).astype(np.float32)
        d = np.min(np.sqrt((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2), axis=-1)
        g = np.clip(d * np.sqrt(n) * 1.6, 0, 1)
        g = 0.75 * g + 0.25 * _noise(rng, size, 1.5)
    elif family == "brushed":
        n = rng.standard_normal((size, size)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigmaX=rng.uniform(8, 25), sigmaY=0.7)
        n = (n - n.min()) / max(float(np.ptp(n)), 1e-6)
        g = 0.7 * n + 0.3 * yy
    elif family == "part":
        g = 0.2 + 0.1 * _noise(rng, size, 4)
        mask = np.zeros((size, size), np.uint8)
        c = (int(size * rng.uniform(0.4, 0.6)), int(size * rng.uniform(0.4, 0.6)))
        cv2.circle(mask, c, int(size * rng.uniform(0.25, 0.35)), 255, -1)
        cv2.circle(mask, c, int(size * rng.uniform(0.06, 0.12)), 0, -1)
        g = np.where(mask > 0, 0.75 + 0.15 * _noise(rng, size, 2), g)
    else:
        raise ValueError(f"unknown texture family {family!r}; known: {', '.join(FAMILIES)}")
    rgb = _colourise(g.astype(np.float32), rng)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def texture_variants(family: str, count: int, seed: int, size: int = 256) -> list[np.ndarray]:
    """``count`` normal images of one product: the same look (style seed), a different part each time.

    Textures are crops at random offsets of one larger field; a "part" is the same part with fresh
    sensor noise and a small shift.
    """
    rng = np.random.default_rng([seed, 1])
    if family == "part":
        base = generate_texture(family, np.random.default_rng(seed), size).astype(np.float32)
        out = []
        for _ in range(count):
            shift = np.float32([[1, 0, rng.uniform(-3, 3)], [0, 1, rng.uniform(-3, 3)]])
            moved = cv2.warpAffine(base, shift, (size, size), borderMode=cv2.BORDER_REFLECT_101)
            out.append(np.clip(moved + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8))
        return out
    field = generate_texture(family, np.random.default_rng(seed), size * 2)
    offsets = rng.integers(0, size, (count, 2))
    return [np.ascontiguousarray(field[y : y + size, x : x + size]) for y, x in offsets]


def default_training_set(count: int = 240, seed: int = 0, size: int = 256) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [generate_texture(FAMILIES[i % len(FAMILIES)], rng, size) for i in range(count)]
