"""Few-shot enrolment: K normal images build a product's memory, every other normal calibrates it.

Usage::

    from lineguard.runtime.scoring.enroll import enroll_product, calibrate_product
    enroll_product(bundle, "tile", shots, calibration_images=others)   # writes products/tile/*
    calibrate_product(bundle, "tile", newly_confirmed_normals)          # more calibration, same memory

The shots are expanded into light augmentations (small shifts, rotations, brightness and contrast
changes, as a camera sees from part to part); the memory holds all views and, unless the product is
enrolled ``orientation="fixed"``, every shot turned and mirrored too (parts reach a camera in any
orientation; measured on real photos in the README's ablation). Held-out views of the shots fix the
score function (lineguard.runtime.scoring.calibration):

* K >= 2: leave-one-image-out, every view of image i against the memory of the other images;
* K = 1:  leave-one-region-out, each quarter of every view against the memory of the other quarters.

Calibration images are scored once each, unaugmented, against the full memory, exactly as the line
scores a frame: their ranks are the p-values (split conformal). An image already counted (same pixels)
is never counted again, and a shot never calibrates (the memory holds it: it would score too low), nor
does an image the product's own decoder (``lineguard adapt``) was trained on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from lineguard.runtime.bundle import (
    Bundle,
    DecoderAdaptation,
    MemoryOrientation,
    ProductCalibration,
    ProductEntry,
    ScoringSpec,
    TailFit,
    utc_now,
)
from lineguard.runtime.inference.base import Backend
from lineguard.runtime.inference.chain import ChainOutput, VisionChain
from lineguard.runtime.inference.preprocess import ChannelOrder
from lineguard.runtime.inference.tiling import resolve_tiles
from lineguard.runtime.scoring.anomaly_maps import component_maps
from lineguard.runtime.scoring.calibration import (
    FAMILIES,
    BorderProfile,
    component_family,
    component_norms,
    fuse_maps,
    image_scores,
)
from lineguard.runtime.scoring.gumbel_tail import GumbelFit
from lineguard.runtime.scoring.patch_scoring import PatchMemory
from lineguard.runtime.scoring.product_model import ProductModel, ProductScorer
from lineguard.runtime.scoring.region_evidence import normal_appearance

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


def turned_and_mirrored(rgb: np.ndarray) -> list[np.ndarray]:
    """The image in every other orientation of its frame: for a square frame the 7 others of the square's
    symmetry group (rotations by 90, 180 and 270 degrees, and four mirror images); for an oblong frame the
    3 that keep its shape (180 degrees, two mirror images)."""
    turned = [np.rot90(rgb, 2), rgb[:, ::-1], rgb[::-1]]
    if rgb.shape[0] == rgb.shape[1]:
        turned += [np.rot90(rgb, 1), np.rot90(rgb, 3), rgb.transpose(1, 0, 2), np.rot90(rgb, 2).transpose(1, 0, 2)]
    return [np.ascontiguousarray(view) for view in turned]


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
    calibration_images: Sequence[np.ndarray] = (),
    views_per_shot: int | None = None,
    seed: int = 0,
    order: ChannelOrder = "BGR",
    chain: VisionChain | None = None,
    families: Sequence[str] = FAMILIES,
    decoder: DecoderAdaptation | None | Literal["keep"] = "keep",
    orientation: MemoryOrientation = "any",
    tiles: int | Literal["auto"] = "auto",
) -> ProductCalibration:
    """Enrol ``images`` (the shots, uint8, OpenCV order) as the memory of ``product``, calibrated on
    ``calibration_images`` (other normals of the product); updates the bundle in place.

    ``families`` chooses which score families the product fuses (default all three; `eval --without`
    measures what each one earns). ``decoder``: the product's own decoder (``lineguard adapt``), None for
    the shared one; "keep" keeps what the product has (re-enrolling an adapted product keeps its decoder).
    ``orientation="any"``: the memory also holds every shot turned and mirrored (parts that lie in any
    orientation: a surface, a round part, a loose part); "fixed" for fixtured parts where a turned
    structure is itself a defect. ``tiles``: frames of the product are inspected at this many times the input
    size per side, as tiles (lineguard.runtime.inference.tiling); "auto" chooses from the shots' size
    (:func:`~lineguard.runtime.inference.tiling.tiles_for`)."""
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise EnrollmentError(f"families must be a non-empty subset of {FAMILIES}, got {sorted(families)}")
    if not PRODUCT_NAME.match(product):
        raise EnrollmentError(f"product name {product!r} must be 1-64 letters, digits, '_', '-' or '.'")
    if not images:
        raise EnrollmentError("enrolment needs at least one normal image")
    chain = chain or VisionChain(bundle)
    manifest = bundle.manifest
    if decoder == "keep":
        previous = manifest.products.get(product)
        decoder = previous.decoder if previous is not None else None
    product_decoder = chain.decoder_for(decoder)
    spec = manifest.scoring
    tiles = resolve_tiles(tiles, images, manifest.preprocessing.input_size)
    input_size = chain.preprocessor.size(tiles)
    shots = len(images)
    views_per_shot = views_per_shot or default_views(shots)
    rng = np.random.default_rng(seed)

    views, image_of_view, rgb_views, turned = [], [], [], []
    for index, image in enumerate(images):
        rgb = chain.preprocessor.to_model_rgb(image, order, tiles)
        for view in augmented_views(rgb, views_per_shot, rng):
            rgb_views.append(view)
            views.append(chain.preprocessor.normalise(view))
            image_of_view.append(index)
        if orientation == "any":
            turned += [chain.preprocessor.normalise(view) for view in turned_and_mirrored(rgb)]
    out = chain.run_chunked(np.stack(views), decoder=product_decoder, tiles=tiles)
    image_of_view_arr = np.asarray(image_of_view)

    held_out, method = held_out_maps(out, image_of_view_arr, spec, input_size, seed)
    norms = component_norms({name: [m] for name, m in held_out.items() if component_family(name) in families})
    fused = fuse_maps(held_out, norms, spec.smoothing_sigma)
    border = BorderProfile.fit(fused)
    view_scores = image_scores(border.apply(fused))
    view_fit = GumbelFit.from_scores(view_scores) if view_scores.size >= 2 else GumbelFit(float(view_scores[0]), 1.0)
    # the turned shots join the product's memory only: the score function above (norms, border profile, the
    # views' provisional tail) comes from held-out light views, where a turned copy of a held-out image
    # would leak it into its own memory (K = 1 leaves out regions, which turning moves elsewhere)
    memory_features = out.features
    if turned:
        extra = chain.run_chunked(np.stack(turned), decoder=product_decoder, tiles=tiles).features
        memory_features = {stage: np.concatenate([f, extra[stage]]) for stage, f in out.features.items()}
    memory = PatchMemory.build(memory_features, spec, seed)

    scorer = ProductScorer(memory=memory, components=norms, border=border)
    shot_hashes = [pixel_digest(image) for image in images]
    hashes, scores = _score_new_images(chain, scorer, bundle, calibration_images, order,
                                       already=[*shot_hashes, *_decoder_training_images(decoder)],
                                       decoder=product_decoder, tiles=tiles)
    calibration = ProductCalibration(
        product=product,
        shots=shots,
        views_per_shot=views_per_shot,
        method=method,
        components=norms,
        border_mean=border.mean.tolist(),
        border_std=border.std.tolist(),
        view_scores=[float(s) for s in view_scores],
        view_tail=TailFit(location=view_fit.location, scale=view_fit.scale),
        calibration_scores=scores,
        calibration_images=hashes,
        shot_images=shot_hashes,
        appearance=normal_appearance(rgb_views),  # the reference of region evidence
    )

    folder = Path("products") / product
    bundle.path(str(folder)).mkdir(parents=True, exist_ok=True)
    memory_file, calibration_file = str(folder / "memory.npz"), str(folder / "calibration.json")
    np.savez(bundle.path(memory_file), **memory.to_arrays())
    bundle.register_file(memory_file)
    products = dict(bundle.manifest.products)
    products[product] = ProductEntry(
        name=product,
        shots=shots,
        views=views_per_shot,
        orientation=orientation,
        tiles=tiles,
        memory_file=memory_file,
        calibration_file=calibration_file,
        enrolled_at=utc_now(),
        decoder=decoder,
    )
    bundle.manifest = bundle.manifest.model_copy(update={"products": products})
    _write_calibration(bundle, calibration_file, calibration)
    return calibration


def calibrate_product(
    bundle: Bundle,
    product: str,
    images: Sequence[np.ndarray],
    order: ChannelOrder = "BGR",
    chain: VisionChain | None = None,
) -> tuple[ProductCalibration, int]:
    """Add held-out normals to ``product``'s calibration without touching its memory.

    Returns the new calibration and how many of ``images`` were new: same pixels are counted once, and
    the product's own shots (in its memory, so they would score too low) never calibrate.
    """
    if product not in bundle.manifest.products:
        raise EnrollmentError(f"product {product!r} is not enrolled: run `lineguard enroll` first")
    if not images:
        raise EnrollmentError("calibration needs at least one normal image")
    chain = chain or VisionChain(bundle)
    model = ProductModel.load(bundle, product)
    old = model.calibration
    entry = bundle.manifest.products[product]
    hashes, scores = _score_new_images(chain, model.scorer, bundle, images, order,
                                       already=[*old.calibration_images, *old.shot_images,
                                                *_decoder_training_images(entry.decoder)],
                                       decoder=chain.decoder_for(entry.decoder), tiles=entry.tiles)
    if not hashes:  # nothing new: leave the bundle (and a running line's drift windows) as they are
        return old, 0
    calibration = old.model_copy(update={"calibration_scores": [*old.calibration_scores, *scores],
                                         "calibration_images": [*old.calibration_images, *hashes]})
    _write_calibration(bundle, bundle.manifest.products[product].calibration_file, calibration)
    return calibration, len(hashes)


def _decoder_training_images(decoder: DecoderAdaptation | None) -> list[str]:
    """The images a product's own decoder was trained on: they never calibrate (its maps would be too calm
    on them), also after a re-enrolment that draws other shots and keeps the decoder."""
    return list(decoder.shot_images) if decoder is not None else []


def pixel_digest(image: np.ndarray) -> str:
    """sha256 of an image's pixels and shape: the identity under which a calibration image is counted."""
    digest = hashlib.sha256(repr((image.shape, str(image.dtype))).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def _score_new_images(chain: VisionChain, scorer: ProductScorer, bundle: Bundle, images: Sequence[np.ndarray],
                      order: ChannelOrder, already: Sequence[str], chunk: int = 8,
                      decoder: Backend | None = None, tiles: int = 1) -> tuple[list[str], list[float]]:
    """Image scores of the images not counted yet, one per image, as the inspector scores a frame."""
    seen = set(already)
    fresh: list[np.ndarray] = []
    hashes: list[str] = []
    for image in images:
        digest = pixel_digest(image)
        if digest not in seen:
            seen.add(digest)
            hashes.append(digest)
            fresh.append(image)
    spec, size = bundle.manifest.scoring, chain.preprocessor.size(tiles)
    scores: list[float] = []
    for start in range(0, len(fresh), chunk):
        batch = chain.preprocessor(fresh[start : start + chunk], order, tiles)
        fused = scorer.fused(chain.run(batch, decoder=decoder, tiles=tiles), size, spec.smoothing_sigma)
        scores.extend(float(s) for s in image_scores(fused))
    return hashes, scores


def _write_calibration(bundle: Bundle, relative: str, calibration: ProductCalibration) -> None:
    bundle.path(relative).write_text(calibration.model_dump_json(indent=2))
    bundle.register_file(relative)
    bundle.write_manifest()
