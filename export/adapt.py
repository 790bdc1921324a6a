"""``lineguard adapt``: a product's own anomaly decoder, fine-tuned on simulated anomalies over its normals.

Usage::

    from lineguard.export.adapt import adapt_product
    result = adapt_product("bundles/default", "tile", "data/tile/train/good", shots=4, seed=0)
    result.adaptation.file          # products/tile/decoder.onnx (checksummed in the manifest)
    result.calibration              # the product enrolled anew with it (memory, norms, p-value calibration)

The bundle's decoder was trained on anomalies simulated over generic normals; on a product it has never
seen its map is a weak part of the score (README ablation). Here it is fine-tuned, as ``export vision``
trains it (export/training.py: cut-paste with Poisson blending, scratches, stains; focal + dice loss), on
anomalies simulated over the product's K shots only: the same shots ``lineguard enroll --shots K --seed S``
draws, so no calibration normal is trained on. The result goes through the factorised export graph and
the parity check of every ONNX model, is written to ``products/<name>/decoder.onnx``, and the product is
enrolled again with it (component norms and calibration scores depend on the decoder's map). Inspecting,
enrolling and calibrating that product then run its decoder instead of the shared one
(``ProductEntry.decoder``; lineguard.runtime.inference.chain.VisionChain.decoder_for). Minutes on a CPU.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lineguard.export.onnx_export import export_onnx, onnx_parity
from lineguard.export.reference_chain import TorchVisionChain
from lineguard.export.training import TrainReport, train_decoder
from lineguard.runtime.bundle import Bundle, DecoderAdaptation, MemoryOrientation, ProductCalibration, utc_now
from lineguard.runtime.image_io import image_paths, read_images, split_normals
from lineguard.runtime.inference.tiling import images_as_tiles, resolve_tiles
from lineguard.runtime.scoring.enroll import PRODUCT_NAME, enroll_product, pixel_digest

ADAPT_STEPS = 80
ADAPT_SAMPLES = 192
ADAPT_LR = 1e-3  # half export vision's: a fine-tune from the shared decoder, not training from scratch
PARITY_TOLERANCE = 1e-2  # as export vision's


class AdaptError(ValueError):
    """The product cannot be adapted (no normals, parity failed, ...)."""


@dataclass(frozen=True)
class AdaptResult:
    adaptation: DecoderAdaptation
    calibration: ProductCalibration
    training: TrainReport
    calibration_images: int


def adapt_decoder(bundle: Bundle, shots: Sequence[np.ndarray], out_file: str, steps: int = ADAPT_STEPS,
                  samples: int = ADAPT_SAMPLES, lr: float = ADAPT_LR, seed: int = 0,
                  tiles: int = 1) -> tuple[DecoderAdaptation, TrainReport]:
    """Fine-tune the bundle's decoder on ``shots`` (BGR uint8), export it to ``out_file`` (bundle-relative)
    and check its parity; returns its record (not yet on any product) and the training report. ``tiles``: the
    product is inspected as that many tiles per side, so the decoder trains on the tiles of the shots (what it
    will see), not on the shots squeezed whole into the input size."""
    if not shots:
        raise AdaptError("adaptation needs at least one normal image")
    reference = TorchVisionChain(bundle)
    decoder = copy.deepcopy(reference.decoder)
    seen = images_as_tiles(shots, tiles, bundle.manifest.preprocessing.input_size)
    training = train_decoder(reference.encoder, decoder, seen, bundle.manifest.preprocessing, steps=steps,
                             samples=samples, seed=seed, lr=lr)
    with torch.no_grad():
        features = tuple(f.contiguous() for f in reference.encoder(torch.from_numpy(reference.preprocessor(seen))))
    names = [s.name for s in bundle.manifest.encoder.stages]
    path = bundle.path(out_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Exported beside the target and moved over it only once it passed: a product adapted before keeps its
    # decoder file (the one the manifest's checksum names) when this one fails its parity check.
    staged = path.with_name(f".{path.name}.new")
    try:
        export_onnx(decoder.for_export(), features, staged, names, [bundle.manifest.decoder.output_name])
        parity = onnx_parity(decoder, staged, {n: f.numpy() for n, f in zip(names, features, strict=True)})
        if not parity <= PARITY_TOLERANCE:
            raise AdaptError(f"the adapted decoder's ONNX graph differs from PyTorch by {parity:.3g} "
                             f"(tolerance {PARITY_TOLERANCE}): not written")
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    bundle.register_file(out_file)
    manifest = bundle.manifest
    adaptation = DecoderAdaptation(
        file=out_file, base_decoder_sha256=manifest.files[manifest.decoder.file].sha256,
        shot_images=[pixel_digest(image) for image in shots], steps=steps, samples=samples, learning_rate=lr,
        seed=seed, final_loss=float(training.final_loss), parity_max_abs_diff=float(parity), adapted_at=utc_now())
    return adaptation, training


def adapt_product(bundle_dir: str | Path, product: str, normals: str | Path | Sequence[Path], shots: int = 4,
                  seed: int = 0, calib: int | None = None, steps: int = ADAPT_STEPS, samples: int = ADAPT_SAMPLES,
                  lr: float = ADAPT_LR, orientation: MemoryOrientation = "any",
                  tiles: int | Literal["auto"] = "auto") -> AdaptResult:
    """Adapt the decoder to ``product`` on the ``shots`` normals drawn by ``seed`` (as ``enroll`` draws
    them), then enrol the product with it (``orientation`` and ``tiles`` as enrolment's): the other normals
    (or ``calib`` of them) calibrate."""
    if not PRODUCT_NAME.match(product):
        raise AdaptError(f"product name {product!r} must be 1-64 letters, digits, '_', '-' or '.'")
    paths = image_paths(Path(normals)) if isinstance(normals, str | Path) else list(normals)
    if not paths:
        raise AdaptError(f"no normal images in {normals}")
    shot_paths, calibration_paths = split_normals(paths, min(shots, len(paths)), seed, calib)
    shot_images = read_images(shot_paths)
    calibration_images = read_images(calibration_paths)  # an unreadable image fails before anything is written
    bundle = Bundle.open(bundle_dir)
    tiles = resolve_tiles(tiles, shot_images, bundle.manifest.preprocessing.input_size)
    adaptation, training = adapt_decoder(bundle, shot_images, f"products/{product}/decoder.onnx", steps, samples,
                                         lr, seed, tiles)
    calibration = enroll_product(bundle, product, shot_images, calibration_images=calibration_images,
                                 seed=seed, decoder=adaptation, orientation=orientation, tiles=tiles)
    return AdaptResult(adaptation=adaptation, calibration=calibration, training=training,
                       calibration_images=len(calibration_paths))
