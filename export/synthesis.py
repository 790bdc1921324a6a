"""Anomaly simulation from normal images: what the decoder is trained on (NSA-style).

Usage::

    rng = np.random.default_rng(0)
    sample = cut_paste_poisson(target_bgr, source_bgr, rng)
    sample.image, sample.mask          # uint8 BGR with a blended foreign patch, uint8 {0,1} mask

The main kind is **cut-paste + Poisson blending**: a patch from elsewhere (same or another image) is
scaled, rotated, its contrast changed, and blended into the target with ``cv2.seamlessClone`` so that
no sharp seam gives it away; the label is exactly the pasted region. Scratches, stains and local
texture changes (blur/noise) add the small marks and statistic changes real lines see.
No torch: numpy + OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("cut-paste", "scratch", "stain", "texture")


@dataclass
class SyntheticAnomaly:
    image: np.ndarray
    mask: np.ndarray
    kind: str


def _random_patch_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A filled ellipse or polygon covering most of an (h, w) box."""
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 1, -1)
    else:
        n = int(rng.integers(5, 9))
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi / n, n)
        radius = rng.uniform(0.6, 1.0, n)
        pts = np.stack([w / 2 + (w / 2 - 1) * radius * np.cos(angles), h / 2 + (h / 2 - 1) * radius * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    return mask


def cut_paste_poisson(
    target: np.ndarray, source: np.ndarray, rng: np.random.Generator,
    min_fraction: float = 0.08, max_fraction: float = 0.3, center: tuple[int, int] | None = None,
    opacity: float | None = None,
) -> SyntheticAnomaly:
    """Cut a patch from ``source``, scale/rotate/re-contrast it, Poisson-blend it into ``target``.

    ``center`` (x, y) places the patch there (clamped inside the image); default: anywhere.
    ``opacity`` keeps that share of the patch's own levels over the Poisson result; default: random.
    """
    h, w = target.shape[:2]
    if source.shape[:2] != (h, w):
        source = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
    ph = max(6, int(h * rng.uniform(min_fraction, max_fraction)))
    pw = max(6, int(w * rng.uniform(min_fraction, max_fraction)))
    sy, sx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    patch = source[sy : sy + ph, sx : sx + pw].astype(np.float32)
    # Poisson blending keeps gradients, not levels: amplify them so the paste stays visible
    patch = np.clip((patch - patch.mean()) * rng.uniform(1.3, 2.5) + patch.mean() + rng.uniform(-40, 40), 0, 255)
    mask = _random_patch_mask(ph, pw, rng)

    # random scale and rotation, applied to patch and mask alike, on a canvas that holds the result
    scale, angle = rng.uniform(0.7, 1.3), rng.uniform(0, 360)
    side = int(np.ceil(np.hypot(ph, pw) * scale)) + 2
    matrix = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
    matrix[:, 2] += (side / 2 - pw / 2, side / 2 - ph / 2)
    patch = cv2.warpAffine(patch, matrix, (side, side), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, matrix, (side, side), flags=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    patch, mask = patch[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    bh, bw = mask.shape
    if bh >= h - 4 or bw >= w - 4:  # rotated patch too big for this target: shrink it
        factor = min((h - 6) / bh, (w - 6) / bw)
        patch = cv2.resize(patch, (max(2, int(bw * factor)), max(2, int(bh * factor))))
        mask = cv2.resize(mask, (patch.shape[1], patch.shape[0]), interpolation=cv2.INTER_NEAREST)
        bh, bw = mask.shape

    # seamlessClone centres the mask's box at `center`; keep it a pixel inside the border
    lo_x, hi_x = bw // 2 + 2, w - (bw - bw // 2) - 2
    lo_y, hi_y = bh // 2 + 2, h - (bh - bh // 2) - 2
    if center is None:
        cx, cy = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
    else:
        cx, cy = min(max(center[0], lo_x), hi_x), min(max(center[1], lo_y), hi_y)
    # NORMAL_CLONE only: MIXED_CLONE keeps the target's stronger gradients, which on textured parts
    # erases the paste (measured mean change < 0.1 grey level) and would teach the decoder wrong labels.
    blended = cv2.seamlessClone(patch.astype(np.uint8), target, mask * 255, (cx, cy), cv2.NORMAL_CLONE)
    full = np.zeros((h, w), np.uint8)
    y0, x0 = cy - bh // 2, cx - bw // 2
    full[y0 : y0 + bh, x0 : x0 + bw] = mask
    # Poisson blending adopts the target's levels at the seam, so foreign material of another colour
    # would vanish: keep part of the patch's own levels (opacity), inside the mask only.
    opacity = rng.uniform(0.0, 0.6) if opacity is None else opacity
    pasted = blended.copy()
    pasted[y0 : y0 + bh, x0 : x0 + bw][mask > 0] = patch.astype(np.uint8)[mask > 0]
    alpha = (full.astype(np.float32) * opacity)[..., None]
    image = (blended * (1 - alpha) + pasted * alpha).round().astype(np.uint8)
    # OpenCV's solver may touch a pixel or two past the mask's rim: the label is the truth, so keep
    # the target there
    image[full == 0] = target[full == 0]
    return SyntheticAnomaly(image=image, mask=full, kind="cut-paste")


def scratch(target: np.ndarray, rng: np.random.Generator) -> SyntheticAnomaly:
    h, w = target.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    start = rng.uniform(0.15, 0.85, 2) * (w, h)
    pts = [start]
    for _ in range(int(rng.integers(1, 4))):
        step = rng.uniform(-0.2, 0.2, 2) * (w, h)
        pts.append(np.clip(pts[-1] + step, 2, (w - 3, h - 3)))
    cv2.polylines(mask, [np.asarray(pts, np.int32)], False, 1, int(rng.integers(1, 4)))
    shade = rng.choice([rng.uniform(0, 60), rng.uniform(190, 255)])
    out = target.copy()
    out[mask > 0] = (0.25 * out[mask > 0] + 0.75 * shade).astype(np.uint8)
    return SyntheticAnomaly(image=out, mask=mask, kind="scratch")


def stain(target: np.ndarray, rng: np.random.Generator) -> SyntheticAnomaly:
    h, w = target.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.9) * h))
    axes = (int(rng.uniform(0.02, 0.12) * w) + 1, int(rng.uniform(0.02, 0.12) * h) + 1)
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5)
    mask = (soft > 0.05).astype(np.uint8)  # the label covers the stain's soft rim too
    alpha = (soft * mask)[..., None] * rng.uniform(0.4, 0.8)
    colour = rng.uniform(0, 255, 3)
    out = (target * (1 - alpha) + colour * alpha).astype(np.uint8)
    return SyntheticAnomaly(image=out, mask=mask, kind="stain")


def texture_change(target: np.ndarray, rng: np.random.Generator) -> SyntheticAnomaly:
    """A region whose texture statistics change: blurred, or noisier, or re-contrasted."""
    h, w = target.shape[:2]
    mask = _random_patch_mask(int(h * rng.uniform(0.1, 0.3)), int(w * rng.uniform(0.1, 0.3)), rng)
    full = np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(0, h - mask.shape[0])), int(rng.integers(0, w - mask.shape[1]))
    full[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
    choice = rng.integers(3)
    src = target.astype(np.float32)
    if choice == 0:
        changed = cv2.GaussianBlur(src, (0, 0), rng.uniform(2, 5))
    elif choice == 1:
        changed = src + rng.normal(0, rng.uniform(20, 45), src.shape)
    else:
        changed = (src - src.mean()) * rng.uniform(0.3, 0.6) + src.mean()
    out = np.where(full[..., None] > 0, changed, src)
    return SyntheticAnomaly(image=np.clip(out, 0, 255).astype(np.uint8), mask=full, kind="texture")


def synthesize(target: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> SyntheticAnomaly:
    """One anomaly of a random kind; cut-paste is half of them."""
    kind = rng.choice(KINDS, p=[0.5, 0.17, 0.16, 0.17])
    if kind == "cut-paste":
        return cut_paste_poisson(target, source, rng)
    if kind == "scratch":
        return scratch(target, rng)
    if kind == "stain":
        return stain(target, rng)
    return texture_change(target, rng)
