"""Few-shot enrolment: k normal images of a product -> patch memory + self-calibration, no retraining.

Usage::

    from lineguard.runtime.enroll import enroll_product
    enroll_product(bundle, "tile", [cv2.imread(p) for p in paths])   # writes products/tile/*

Each reference image is expanded into light augmentations (small shifts, rotations, brightness and
contrast changes, as a camera sees from part to part). The memory holds all views; the calibration
scores each view against a memory that does *not* hold it (see lineguard.runtime.calibration):

* k >= 2: leave-one-image-out, every view of image i against the memory of the other images;
* k = 1:  leave-one-region-out, each quarter of every view against the memory of the other quarters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.anomaly_maps import component_maps
from lineguard.runtime.bundle import Bundle, ProductCalibration, ProductEntry, ScoringSpec, utc_now
from lineguard.runtime.calibration import BorderProfile, GumbelFit, component_norms, fuse_maps, image_scores
from lineguard.runtime.chain import ChainOutput, VisionChain
from lineguard.runtime.patch_scoring import PatchMemory
from lineguard.runtime.preprocess import ChannelOrder

PRODUCT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
QUARTERS = ((0.0, 0.5, 0.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 1.0, 0.0, 0.5), (0.5, 1.0, 0.5, 1.0))


class EnrollmentError(ValueError):
    """The reference images cannot make a product (none given, bad name, unreadable)."""


def default_views(shots: int) -> int:
    """Views per reference: more for fewer shots, so calibration always has a few dozen samples."""
    return max(4, 16 // shots)


def augmented_views(rgb: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The original plus ``count - 1`` light photometric/geometric variations, same size."""
    h, w = rgb.shape[:2]
    views = [rgb]
    for _ in range(count - 1):
        angle = rng.uniform(-4.0, 4.0)
        scale = rng.uniform(1.0, 1.08)
        shift = rng.uniform(-0.03, 0.03, size=2) * (w, h)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += shift
        view = cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        gain, bias = rng.uniform(0.94, 1.06), rng.uniform(-8, 8)
        views.append(cv2.convertScaleAbs(view, alpha=gain, beta=bias))
    return views


def _subset(out: ChainOutput, index: np.ndarray) -> ChainOutput:
    return ChainOutput(features={k: v[index] for k, v in out.features.items()}, decoder_map=out.decoder_map[index])


def held_out_maps(
    out: ChainOutput, image_of_view: np.ndarray, memory_spec: ScoringSpec, input_size: tuple[int, int], seed: int
) -> tuple[dict[str, np.ndarray], str]:
    """Component maps of every view, each pixel scored by a memory that never saw it."""
    shots = int(image_of_view.max()) + 1
    assembled: dict[str, np.ndarray] = {}
    if shots >= 2:
        method = "leave-one-image-out"
        for image in range(shots):
            held = np.flatnonzero(image_of_view == image)
            rest = np.flatnonzero(image_of_view != image)
            memory = PatchMemory.build(_subset(out, rest).features, memory_spec, seed)
            for name, values in component_maps(_subset(out, held), memory, input_size).items():
                assembled.setdefault(name, np.zeros((len(image_of_view), *input_size), np.float32))[held] = values
    else:
        method = "leave-one-region-out"
        h, w = input_size
        for box in QUARTERS:
            memory = PatchMemory.build(out.features, memory_spec, seed, exclude_box=box)
            y0, y1, x0, x1 = round(box[0] * h), round(box[1] * h), round(box[2] * w), round(box[3] * w)
            for name, values in component_maps(out, memory, input_size).items():
                target = assembled.setdefault(name, np.zeros((len(image_of_view), *input_size), np.float32))
                target[:, y0:y1, x0:x1] = values[:, y0:y1, x0:x1]
    return assembled, method


def enroll_product(
    bundle: Bundle,
    product: str,
    images: Sequence[np.ndarray],
    views_per_shot: int | None = None,
    seed: int = 0,
    order: ChannelOrder = "BGR",
    chain: VisionChain | None = None,
) -> ProductCalibration:
    """Enrol ``images`` (uint8, OpenCV order) as the normals of ``product``; updates the bundle in place."""
    if not PRODUCT_NAME.match(product):
        raise EnrollmentError(f"product name {product!r} must be 1-64 letters, digits, '_', '-' or '.'")
    if not images:
        raise EnrollmentError("enrolment needs at least one normal image")
    chain = chain or VisionChain(bundle)
    manifest = bundle.manifest
    spec = manifest.scoring
    input_size = manifest.preprocessing.input_size
    shots = len(images)
    views_per_shot = views_per_shot or default_views(shots)
    rng = np.random.default_rng(seed)

    views, image_of_view = [], []
    for index, image in enumerate(images):
        rgb = chain.preprocessor.to_model_rgb(image, order)
        for view in augmented_views(rgb, views_per_shot, rng):
            views.append(chain.preprocessor.normalise(view))
            image_of_view.append(index)
    out = chain.run_chunked(np.stack(views))
    image_of_view_arr = np.asarray(image_of_view)

    held_out, method = held_out_maps(out, image_of_view_arr, spec, input_size, seed)
    norms = component_norms({name: [m] for name, m in held_out.items()})
    fused = fuse_maps(held_out, norms, spec.smoothing_sigma)
    border = BorderProfile.fit(fused)
    scores = image_scores(border.apply(fused))
    fit = GumbelFit.from_scores(scores)
    calibration = ProductCalibration(
        product=product,
        shots=shots,
        views_per_shot=views_per_shot,
        method=method,
        components=norms,
        border_mean=border.mean.tolist(),
        border_std=border.std.tolist(),
        n_calibration_scores=int(scores.size),
        score_location=fit.location,
        score_scale=fit.scale,
        calibration_scores=[float(s) for s in scores],
    )

    memory = PatchMemory.build(out.features, spec, seed)
    folder = Path("products") / product
    bundle.path(str(folder)).mkdir(parents=True, exist_ok=True)
    memory_file, calibration_file = str(folder / "memory.npz"), str(folder / "calibration.json")
    np.savez(bundle.path(memory_file), **memory.to_arrays())
    bundle.path(calibration_file).write_text(calibration.model_dump_json(indent=2))
    bundle.register_file(memory_file)
    bundle.register_file(calibration_file)
    products = dict(bundle.manifest.products)
    products[product] = ProductEntry(
        name=product,
        shots=shots,
        views=views_per_shot,
        memory_file=memory_file,
        calibration_file=calibration_file,
        enrolled_at=utc_now(),
    )
    bundle.manifest = bundle.manifest.model_copy(update={"products": products})
    bundle.write_manifest()
    return calibration
