"""The texture photos and the one crop process every split of a category is drawn from.

Usage::

    photo = load_photo("brick")                                # 512x512 greyscale uint8, read-only (CC0)
    crop_rng, assign_rng, defect_rng = streams("brick", seed=0)
    spec = CropSpec(file="train/good/000.png", split="train", defect="good", draw=0,
                    **draw_crop(photo.shape, crop_rng))
    clean = render_crop(photo, spec)                           # the defect-free crop of one image

Each category is one photo that ships inside the scikit-image wheel (``skimage.data.brick()``,
``grass()``, ``gravel()``; nothing is downloaded). Every image of a category comes from **one and the same
process**: square crops (160-240 px) at independent, uniformly random positions over the whole photo, each
with a small gain/bias/gamma change and sensor noise drawn from the same law. Only after all crops are
drawn are they dealt to their roles (train/good, test/good, the clean base of each defect image) by a
random permutation from a stream of its own (``lineguard.evaluation.data.plan_category``), so a crop's
split says nothing about where it lies or how it looks. Deterministic for a seed.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel

GENERATOR_VERSION = 2       # 2: one crop process for every split (1: train and test from different quadrants)
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
CROP_MIN, CROP_MAX = 160, 240
SAMPLING = ("every crop drawn independently: position uniform over the whole photo, side uniform in "
            f"[{CROP_MIN}, {CROP_MAX}], one photometric law; then dealt to train/good, test/good and defect "
            "bases by a random permutation")


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


def streams(category: str, seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the crops, their assignment to roles, and the defects."""
    index = TEXTURES.index(category) if category in TEXTURES else sum(map(ord, category))
    crops, assign, defects = np.random.SeedSequence([seed, index, GENERATOR_VERSION]).spawn(3)
    return np.random.default_rng(crops), np.random.default_rng(assign), np.random.default_rng(defects)


def render_crop(photo: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The clean (defect-free) crop of ``spec``: crop, gamma, gain/bias, sensor noise; uint8."""
    x, y, side = spec.box
    crop = photo[y : y + side, x : x + side].astype(np.float32) / 255.0
    crop = np.power(crop, spec.gamma) * 255.0 * spec.gain + spec.bias
    noise = np.random.default_rng(spec.noise_seed).normal(0.0, spec.noise_sigma, crop.shape)
    return np.clip(crop + noise, 0, 255).round().astype(np.uint8)
