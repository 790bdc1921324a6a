"""Evaluation data nobody tuned to: MVTec-AD-layout texture categories from scikit-image's CC0 photos.

Usage::

    from lineguard.eval_data import build_texture_set, ensure_texture_set

    build_texture_set("artifacts/eval-data/skimage", seed=0)        # -> ["brick", "grass", "gravel"]
    ensure_texture_set("artifacts/eval-data/skimage", seed=0)       # builds only when missing or stale
    # python -m lineguard.eval_data --out artifacts/eval-data/skimage --seed 0

Each category is one photo that ships inside the scikit-image wheel (``skimage.data.brick()``,
``grass()``, ``gravel()``: 512x512 greyscale, CC0; nothing is downloaded), laid out as MVTec-AD::

    C/train/good/000.png ...                      normal crops
    C/test/good/000.png ...                       normal crops
    C/test/<defect>/000.png ...                   one defect each, one folder per defect type
    C/ground_truth/<defect>/000_mask.png          single-channel 0/255, same size as its image
    C/sources.json                                where every file came from (crop box, photometry)

Every image of a category comes from **one and the same process**: square crops (160-240 px) at
independent, uniformly random positions over the whole photo, each with a small gain/bias/gamma
change and sensor noise drawn from the same law. Only after all crops are drawn are they dealt to
their roles (train/good, test/good, the clean base of each defect image) by a random permutation from
a stream of its own, so a crop's split says nothing about where it lies or how it looks.

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

Every image's clean crop can be re-rendered from ``sources.json`` (:func:`render_crop`), which is
how the tests prove the defect lies inside its mask. Deterministic for a seed.

Why one process: ``eval`` calibrates split-conformally (the K shots build the memory, every other
train/good image calibrates, a test image's p-value is its rank among the calibration scores), which
is valid only when test normals are exchangeable with the calibration normals. A 512 px photo holds
only ~10 disjoint 160 px crops, so crops overlap the shots often; here they do so equally often for
calibration normals, test normals and defect bases (each crop's ``draw`` index in ``sources.json``
records the permutation), so the false-reject rates measure the budget honestly. The price: test
pixels may have been seen in training, as on a line where the same surface comes back, which makes
AUROC on this set read higher than on MVTec-AD, where every image is a new part. (Generator version
1 took train crops from two quadrants and test crops from the other two: calibration crops shared
pixels with the shots and test crops never did, so p-values were optimistic and false rejects high.)
"""

from __future__ import annotations

import argparse
import functools
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel

GENERATOR_VERSION = 2       # 2: one crop process for every split (1: train and test from different quadrants)
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
# other photos in the wheel that serve as foreign material (never the category's own photo)
FOREIGN_SOURCES: tuple[str, ...] = ("camera", "coins", "moon", "chelsea", "coffee", "astronaut", "rocket",
                                    "brick", "grass", "gravel")
DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "foreign", "smear", "missing")
CROP_MIN, CROP_MAX = 160, 240
SAMPLING = ("every crop drawn independently: position uniform over the whole photo, side uniform in "
            f"[{CROP_MIN}, {CROP_MAX}], one photometric law; then dealt to train/good, test/good and defect "
            "bases by a random permutation")
MIN_CHANGE = 8.0          # mean absolute grey-level change a defect must make inside its mask


class CropSpec(BaseModel):
    """How one image's clean crop is rendered from the category's photo."""

    file: str                       # relative to the category folder
    split: str                      # "train" or "test"
    draw: int                       # index of this crop in the category's draw order (before the permutation)
    defect: str                     # "good" or a defect type
    box: tuple[int, int, int]       # x, y, side in the photo
    gain: float
    bias: float
    gamma: float
    noise_sigma: float
    noise_seed: int
    mask: str | None = None         # relative path of the ground-truth mask
    defect_params: dict[str, Any] = {}


class CategorySources(BaseModel):
    category: str
    photo: str                      # e.g. "skimage.data.brick"
    photo_shape: tuple[int, int]
    seed: int
    generator_version: int
    crop_region: tuple[int, int, int, int]            # x0, y0, x1, y1 (exclusive): where every crop may lie
    sampling: str = SAMPLING
    images: list[CropSpec]


class TextureSetInfo(BaseModel):
    """``dataset.json`` at the set's root: what was built, so a cache can tell when it is stale."""

    generator_version: int
    seed: int
    n_train: int
    n_test_good: int
    n_test_defect_per_type: int
    categories: list[str]
    defect_types: list[str]


# ----------------------------------------------------------------------------------- photos and crops

@functools.lru_cache(maxsize=16)
def load_photo(name: str) -> np.ndarray:
    """A scikit-image photo as greyscale uint8, read-only (from the wheel's own data folder; never downloaded)."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    image.flags.writeable = False
    return image


def draw_crop(photo_shape: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
    """One crop of the single process every split shares: box uniform over the photo, photometric jitter."""
    h, w = photo_shape
    side = int(rng.integers(CROP_MIN, min(CROP_MAX, h, w) + 1))
    x = int(rng.integers(0, w - side + 1))
    y = int(rng.integers(0, h - side + 1))
    return {"box": (x, y, side), "gain": float(rng.uniform(0.9, 1.1)), "bias": float(rng.uniform(-10, 10)),
            "gamma": float(rng.uniform(0.9, 1.1)), "noise_sigma": float(rng.uniform(0.5, 2.5)),
            "noise_seed": int(rng.integers(2**31))}


def _streams(category: str, seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the crops, their assignment to roles, and the defects."""
    index = TEXTURES.index(category) if category in TEXTURES else sum(map(ord, category))
    crops, assign, defects = np.random.SeedSequence([seed, index, GENERATOR_VERSION]).spawn(3)
    return np.random.default_rng(crops), np.random.default_rng(assign), np.random.default_rng(defects)


def plan_category(category: str, photo_shape: tuple[int, int], seed: int = 0, n_train: int = 24,
                  n_test_good: int = 16, n_test_defect_per_type: int = 8,
                  defect_types: Sequence[str] = DEFECT_TYPES) -> list[CropSpec]:
    """Every image's clean crop, in file order (no pixels): N crops drawn alike, then randomly dealt to roles.

    The pool of crops depends only on (category, seed, N); which role gets which crop only on an
    independent permutation. Hence train/good, test/good and the defect bases are exchangeable.
    """
    crop_rng, assign_rng, _ = _streams(category, seed)
    roles: list[tuple[str, str, str, str | None]] = [
        ("train", "good", f"train/good/{i:03d}.png", None) for i in range(n_train)]
    roles += [("test", "good", f"test/good/{i:03d}.png", None) for i in range(n_test_good)]
    roles += [("test", kind, f"test/{kind}/{i:03d}.png", f"ground_truth/{kind}/{i:03d}_mask.png")
              for kind in defect_types for i in range(n_test_defect_per_type)]
    pool = [draw_crop(photo_shape, crop_rng) for _ in range(len(roles))]
    order = assign_rng.permutation(len(roles))
    return [CropSpec(file=file, split=split, defect=defect, draw=int(d), mask=mask, **pool[d])
            for (split, defect, file, mask), d in zip(roles, order, strict=True)]


def render_crop(photo: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The clean (defect-free) crop of ``spec``: crop, gamma, gain/bias, sensor noise; uint8."""
    x, y, side = spec.box
    crop = photo[y : y + side, x : x + side].astype(np.float32) / 255.0
    crop = np.power(crop, spec.gamma) * 255.0 * spec.gain + spec.bias
    noise = np.random.default_rng(spec.noise_seed).normal(0.0, spec.noise_sigma, crop.shape)
    return np.clip(crop + noise, 0, 255).round().astype(np.uint8)


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
# Each returns (defective image, mask 0/1, params); the image differs from the input only within a few
# pixels of the mask (soft edges below the label's level), never farther.

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


# --------------------------------------------------------------------------------------------- sets

def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def _clear_category(cat_dir: Path) -> None:
    """Remove a category folder this module wrote before; refuse anything else."""
    if not cat_dir.exists():
        return
    if not (cat_dir / "sources.json").is_file() and any(cat_dir.iterdir()):
        raise FileExistsError(f"{cat_dir} exists and was not written by lineguard.eval_data: not replacing it")
    shutil.rmtree(cat_dir)


def build_category(root: str | Path, category: str, seed: int = 0, n_train: int = 24, n_test_good: int = 16,
                   n_test_defect_per_type: int = 8, defect_types: Sequence[str] = DEFECT_TYPES) -> CategorySources:
    """Write one category (photo ``skimage.data.<category>()``) under ``root``; returns its sources."""
    photo = load_photo(category)
    specs = plan_category(category, (photo.shape[0], photo.shape[1]), seed, n_train, n_test_good,
                          n_test_defect_per_type, defect_types)
    _, _, rng = _streams(category, seed)
    cat_dir = Path(root) / category
    _clear_category(cat_dir)
    for spec in specs:
        clean = render_crop(photo, spec)
        if spec.defect == "good":
            _write_png(cat_dir / spec.file, clean)
            continue
        image, mask, params = make_defect(clean, spec.defect, rng, exclude=category)
        spec.defect_params = params
        _write_png(cat_dir / spec.file, image)
        assert spec.mask is not None
        _write_png(cat_dir / spec.mask, (mask > 0).astype(np.uint8) * 255)
    sources = CategorySources(category=category, photo=f"skimage.data.{category}", photo_shape=photo.shape,
                              seed=seed, generator_version=GENERATOR_VERSION,
                              crop_region=(0, 0, photo.shape[1], photo.shape[0]), images=specs)
    (cat_dir / "sources.json").write_text(sources.model_dump_json(indent=1))
    return sources


def build_texture_set(root: str | Path, seed: int = 0, n_train: int = 24, n_test_good: int = 16,
                      n_test_defect_per_type: int = 8, categories: Sequence[str] = TEXTURES,
                      defect_types: Sequence[str] = DEFECT_TYPES) -> list[str]:
    """Write every category under ``root`` (replacing earlier output of this module); their names."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in categories:
        build_category(root, category, seed, n_train, n_test_good, n_test_defect_per_type, defect_types)
    info = TextureSetInfo(generator_version=GENERATOR_VERSION, seed=seed, n_train=n_train, n_test_good=n_test_good,
                          n_test_defect_per_type=n_test_defect_per_type, categories=list(categories),
                          defect_types=list(defect_types))
    (root / "dataset.json").write_text(info.model_dump_json(indent=1))
    return list(categories)


def ensure_texture_set(root: str | Path, seed: int = 0, n_train: int = 24, n_test_good: int = 16,
                       n_test_defect_per_type: int = 8) -> list[str]:
    """The set under ``root``, built only when missing or made by other parameters or generator."""
    root = Path(root)
    wanted = TextureSetInfo(generator_version=GENERATOR_VERSION, seed=seed, n_train=n_train, n_test_good=n_test_good,
                            n_test_defect_per_type=n_test_defect_per_type, categories=list(TEXTURES),
                            defect_types=list(DEFECT_TYPES))
    info_path = root / "dataset.json"
    if info_path.is_file():
        try:
            have = TextureSetInfo.model_validate_json(info_path.read_text())
        except ValueError:
            have = None
        if have == wanted and all((root / c / "sources.json").is_file() for c in wanted.categories):
            return wanted.categories
    return build_texture_set(root, seed, n_train, n_test_good, n_test_defect_per_type)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineguard.eval_data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="root folder of the MVTec-AD-layout set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=24, help="train/good images per category")
    parser.add_argument("--test-good", type=int, default=16, help="test/good images per category")
    parser.add_argument("--per-defect", type=int, default=8, help="test images per defect type")
    args = parser.parse_args(argv)
    names = build_texture_set(args.out, args.seed, args.train, args.test_good, args.per_defect)
    print(f"wrote {', '.join(names)} under {args.out} ({len(DEFECT_TYPES)} defect types: {', '.join(DEFECT_TYPES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
