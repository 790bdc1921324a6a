"""Defect painters: a visible defect of one of six kinds on a clean crop, and the mask that holds it.

Usage::

    image, mask, params = make_defect(clean, "stain", rng, exclude="brick")   # mask 0/1, same size

The defects are written independently of ``lineguard.export.synthesis`` (which trains the decoder
with polygon/ellipse cut-paste blended by ``cv2.seamlessClone``, hard polyline scratches, uniform
colour ellipses and blur/noise/contrast polygons), with other shapes and other blending:

* ``scratch``: a tapering curved stroke (Bezier), anti-aliased, darkening or brightening;
* ``hole``: a harmonic-contour pit filled with a blurred, darkened, shaded copy of the surface;
* ``stain``: an amoeba-shaped liquid mark from thresholded smooth noise, multiplicative with a
  darker rim (or a chalky bright deposit), soft Gaussian edge;
* ``foreign``: material from a *different* scikit-image photo, rotated, scaled, composited with a
  feathered alpha (no Poisson);
* ``smear``: directional motion blur inside a blob, feathered;
* ``missing``: the surface removed and filled by ``cv2.inpaint`` (Telea or Navier-Stokes).

Each painter returns (defective image, mask 0/1, params); the image differs from the input only within a
few pixels of the mask (soft edges below the label's level), never farther.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from lineguard.evaluation.texture_photos import load_photo

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "foreign", "smear", "missing")
# other photos in the wheel that serve as foreign material (never the category's own photo)
FOREIGN_SOURCES: tuple[str, ...] = ("camera", "coins", "moon", "chelsea", "coffee", "astronaut", "rocket",
                                    "brick", "grass", "gravel")
MIN_CHANGE = 8.0          # mean absolute grey-level change a defect must make inside its mask


# ------------------------------------------------------------------------------------------- shapes

def _harmonic_blob(side: int, radius: float, centre: tuple[float, float], rng: np.random.Generator,
                   aspect: float = 1.0) -> np.ndarray:
    """A filled closed contour r(t) = radius * (1 + sum_k a_k cos(k t + p_k)), k = 2..5; 0/1 uint8."""
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 6):
        r += rng.uniform(0.0, 0.32 / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    angle = rng.uniform(0, np.pi)
    px, py = radius * r * np.cos(t) * aspect, radius * r * np.sin(t) / aspect
    xs = centre[0] + px * np.cos(angle) - py * np.sin(angle)
    ys = centre[1] + px * np.sin(angle) + py * np.cos(angle)
    mask = np.zeros((side, side), np.uint8)
    cv2.fillPoly(mask, [np.round(np.stack([xs, ys], 1) * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)
    return mask


def _noise_blob(side: int, radius: float, centre: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """An amoeba: smooth noise thresholded inside a radial envelope; the largest component, 0/1 uint8."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    envelope = 1.0 - np.hypot(xx - centre[0], yy - centre[1]) / radius
    noise = cv2.GaussianBlur(rng.standard_normal((side, side)).astype(np.float32), (0, 0), radius / 4)
    noise /= max(float(np.abs(noise).max()), 1e-6)
    field = envelope + 0.6 * noise
    mask = (field > 0.15).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == biggest).astype(np.uint8)


def _centre(side: int, radius: float, rng: np.random.Generator) -> tuple[float, float]:
    margin = radius * 1.5 + 6
    lo, hi = margin, max(margin + 1, side - margin)
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0, 1)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel)


# ------------------------------------------------------------------------------------------ defects

Defect = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def scratch(image: np.ndarray, rng: np.random.Generator) -> Defect:
    """A tapering, anti-aliased curved stroke (cubic Bezier), darker or brighter than the surface."""
    side = image.shape[0]
    length = rng.uniform(0.3, 0.6) * side
    angle = rng.uniform(0, 2 * np.pi)
    mid = rng.uniform(0.3, 0.7, 2) * side
    d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    normal = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6)
    p0, p3 = mid - d, mid + d
    p1 = mid - d / 3 + normal * rng.uniform(-0.25, 0.25) * length
    p2 = mid + d / 3 + normal * rng.uniform(-0.25, 0.25) * length
    t = np.linspace(0, 1, 64)[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    curve = np.clip(curve, 3, side - 4)
    thickness = int(rng.integers(1, 3))
    alpha8 = np.zeros((side, side), np.uint8)
    taper = np.sin(np.linspace(0, np.pi, len(curve) - 1)) ** 0.5     # fades in and out at the ends
    for i in range(len(curve) - 1):
        a, b = np.round(curve[i] * 16).astype(int), np.round(curve[i + 1] * 16).astype(int)
        cv2.line(alpha8, tuple(a.tolist()), tuple(b.tolist()), int(60 + 195 * taper[i]), thickness, cv2.LINE_AA,
                 shift=4)
    alpha = alpha8.astype(np.float32) / 255.0
    dark = bool(rng.random() < 0.6)
    strength = float(rng.uniform(0.55, 0.85))
    src = image.astype(np.float32)
    out = src * (1 - alpha * strength) if dark else src + alpha * strength * (255.0 - src)
    mask = _dilate(alpha > 0.1, 1)
    return _finish(image, out, mask), mask, {"dark": dark, "strength": strength, "thickness": thickness}


def hole(image: np.ndarray, rng: np.random.Generator) -> Defect:
    """A pit: harmonic contour, filled with a blurred, darkened copy shaded across the hole."""
    side = image.shape[0]
    radius = rng.uniform(0.04, 0.09) * side
    cx, cy = _centre(side, radius, rng)
    blob = _harmonic_blob(side, radius, (cx, cy), rng)
    src = image.astype(np.float32)
    depth = float(rng.uniform(0.3, 0.6))
    fill = cv2.GaussianBlur(src, (0, 0), rng.uniform(1.5, 3.5)) * depth
    light = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    ramp = ((xx - cx) * np.cos(light) + (yy - cy) * np.sin(light)) / max(radius, 1.0)
    fill = fill * (1.0 + 0.35 * np.clip(ramp, -1, 1))                 # one wall lit, the other in shadow
    alpha = _feather(blob, 0.8)
    out = src * (1 - alpha) + fill * alpha
    mask = _dilate(blob, 1)
    return _finish(image, out, mask), mask, {"radius": float(radius), "depth": depth}


def stain(image: np.ndarray, rng: np.random.Generator) -> Defect:
    """Dried liquid (darker, darker still at its rim) or a chalky deposit, soft-edged and amoeba-shaped."""
    side = image.shape[0]
    radius = rng.uniform(0.07, 0.15) * side
    blob = _noise_blob(side, radius, _centre(side, radius, rng), rng)
    alpha = _feather(blob, rng.uniform(1.5, 3.0))
    rim = np.clip(4 * alpha * (1 - alpha), 0, 1)
    src = image.astype(np.float32)
    dark = bool(rng.random() < 0.7)
    strength = float(rng.uniform(0.25, 0.5))
    if dark:
        out = src * (1 - strength * alpha - 0.25 * rim)
    else:
        flat = cv2.GaussianBlur(src, (0, 0), 2.0)                    # a deposit hides fine texture
        out = src * (1 - alpha) + (flat * (1 - strength) + 235.0 * strength) * alpha
    mask = _dilate(alpha > 0.2, 1)
    return _finish(image, out, mask), mask, {"dark": dark, "strength": strength, "radius": float(radius)}


def foreign(image: np.ndarray, rng: np.random.Generator, exclude: str = "") -> Defect:
    """Material from another scikit-image photo, rotated and scaled, pasted with a feathered alpha."""
    side = image.shape[0]
    names = [n for n in FOREIGN_SOURCES if n != exclude]
    name = names[int(rng.integers(len(names)))]
    other = load_photo(name)
    radius = rng.uniform(0.06, 0.12) * side
    cx, cy = _centre(side, radius, rng)
    blob = _harmonic_blob(side, radius, (cx, cy), rng, aspect=float(rng.uniform(0.7, 1.4)))
    # a window of the other photo, rotated and scaled about its centre, placed on the blob
    scale = float(rng.uniform(0.6, 1.5))
    oh, ow = other.shape
    ox, oy = float(rng.uniform(side, ow - side)) if ow > 2 * side else ow / 2, \
        float(rng.uniform(side, oh - side)) if oh > 2 * side else oh / 2
    matrix = cv2.getRotationMatrix2D((ox, oy), float(rng.uniform(0, 360)), scale)
    matrix[:, 2] += (cx - ox, cy - oy)
    patch = cv2.warpAffine(other, matrix, (side, side), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    # partly adopt the surface's levels: foreign material, not a hole in the picture
    inside = blob > 0
    src = image.astype(np.float32)
    p_mean, p_std = float(patch[inside].mean()), float(patch[inside].std()) + 1e-3
    s_mean, s_std = float(src.mean()), float(src.std()) + 1e-3
    contrast = float(rng.uniform(0.7, 1.4))
    shift = float(rng.uniform(-45, 45))
    patch = (patch - p_mean) / p_std * s_std * contrast + s_mean + shift
    opacity = float(rng.uniform(0.8, 1.0))
    alpha = _feather(blob, rng.uniform(1.0, 2.5)) * opacity
    out = src * (1 - alpha) + patch * alpha
    mask = _dilate(alpha > 0.25, 1)
    return _finish(image, out, mask), mask, {"source": name, "scale": scale, "opacity": opacity,
                                             "shift": shift}


def smear(image: np.ndarray, rng: np.random.Generator) -> Defect:
    """A local smear: directional (motion) blur inside a blob, feathered into the surface."""
    side = image.shape[0]
    radius = rng.uniform(0.07, 0.14) * side
    blob = _harmonic_blob(side, radius, _centre(side, radius, rng), rng, aspect=float(rng.uniform(0.6, 1.6)))
    length = int(rng.integers(9, 22)) | 1
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    angle = float(rng.uniform(0, 180))
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0),
                            (length, length))
    kernel /= max(float(kernel.sum()), 1e-6)
    src = image.astype(np.float32)
    smeared = cv2.filter2D(src, -1, kernel, borderType=cv2.BORDER_REFLECT) + rng.uniform(-10, 10)
    alpha = _feather(blob, 1.5)
    out = src * (1 - alpha) + smeared * alpha
    mask = _dilate(alpha > 0.25, 1)
    return _finish(image, out, mask), mask, {"length": length, "angle": angle}


def missing(image: np.ndarray, rng: np.random.Generator) -> Defect:
    """Surface missing: the region's texture removed and filled in by ``cv2.inpaint``."""
    side = image.shape[0]
    radius = rng.uniform(0.06, 0.12) * side
    blob = _harmonic_blob(side, radius, _centre(side, radius, rng), rng, aspect=float(rng.uniform(0.5, 2.0)))
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
    out = cv2.inpaint(image, blob * 255, 3, method)
    return _finish(image, out.astype(np.float32), blob), blob, {"method": "telea" if method == cv2.INPAINT_TELEA
                                                                else "ns", "radius": float(radius)}


def _finish(image: np.ndarray, out: np.ndarray, mask: np.ndarray, reach: int = 3) -> np.ndarray:
    """uint8 result, identical to ``image`` farther than ``reach`` px from the mask."""
    result = np.clip(out, 0, 255).round().astype(np.uint8)
    keep = _dilate(mask, reach) == 0
    result[keep] = image[keep]
    return result


DEFECTS: dict[str, Callable[..., Defect]] = {
    "scratch": scratch, "hole": hole, "stain": stain, "foreign": foreign, "smear": smear, "missing": missing,
}


def make_defect(image: np.ndarray, kind: str, rng: np.random.Generator, exclude: str = "",
                tries: int = 12) -> Defect:
    """One visible defect of ``kind`` (mean change >= MIN_CHANGE grey levels inside its mask)."""
    best: Defect | None = None
    best_change = -1.0
    for _ in range(tries):
        out, mask, params = DEFECTS[kind](image, rng, exclude) if kind == "foreign" else DEFECTS[kind](image, rng)
        inside = mask > 0
        change = float(np.abs(out.astype(np.float32) - image)[inside].mean()) if inside.any() else 0.0
        if change >= MIN_CHANGE:
            return out, mask, {**params, "mean_change": round(change, 2)}
        if change > best_change:
            best, best_change = (out, mask, {**params, "mean_change": round(change, 2)}), change
    assert best is not None
    return best
