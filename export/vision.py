"""``lineguard export vision``: image encoder + trained decoder + text prototypes -> a bundle folder.

Usage::

    from lineguard.export.vision import export_vision
    bundle = export_vision("bundles/default")                       # EfficientNet-Lite0, generated normals
    bundle = export_vision("bundles/tile", normals_dirs=["data/tile/train/good"])

The export fails (ParityError) when ONNX Runtime and PyTorch disagree by more than PARITY_TOLERANCE on
sample inputs; ``parity.json`` records the measured differences either way. A failed export leaves no
loadable bundle: no ``manifest.json`` is written, and a ``PARITY_FAILED`` marker makes ``Bundle.open`` say why.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import lineguard
from lineguard.export.decoder import LOGIT_SCALE, AnomalyDecoder
from lineguard.export.encoders import STAGE_NAMES, build_encoder
from lineguard.export.onnx_export import OPSET, export_onnx, onnx_parity
from lineguard.export.reference_chain import DECODER_STATE, save_decoder_state
from lineguard.export.text_prototypes import clip_prototypes, minilm_prototypes
from lineguard.export.textures import default_training_set
from lineguard.export.training import train_decoder
from lineguard.runtime.bundle import (
    PARITY_FAILED_NAME,
    SCHEMA_VERSION,
    Bundle,
    BundleManifest,
    DecoderSpec,
    EncoderSpec,
    ParitySummary,
    Preprocessing,
    ScoringSpec,
    new_bundle_id,
    utc_now,
)
from lineguard.runtime.image_io import image_paths, read_images
from lineguard.runtime.inference.preprocess import Preprocessor

# Max abs difference allowed between ONNX Runtime (CPU, FP32) and PyTorch eager, per graph output.
# FP32 reorderings in fused convolutions stay around 1e-4 on stage features; 1e-2 leaves room for
# deeper encoders while still catching a wrong graph (those differ by O(1)).
PARITY_TOLERANCE = 1e-2
# The statistics family's stages (a Gaussian of the normals' patches per stage): s3 (stride 16) alone by
# default. The finer stages' Gaussians flag ordinary grain and edges of real surfaces: with s1 and s2 too,
# or with s2 too, real defects ranked worse (README "Statistics stages", `make eval-stages`).
DEFAULT_STATISTICS_STAGES = ("s3",)


class ExportOptionError(ValueError):
    """An export option the encoder cannot honour (a statistics stage it does not have); raised before any
    training."""


class ParityError(RuntimeError):
    """The exported ONNX graph does not reproduce PyTorch within PARITY_TOLERANCE."""


def load_normals(dirs: Sequence[str | Path]) -> list[np.ndarray]:
    images = []
    for folder in dirs:
        images.extend(read_images(image_paths(folder)))
    if not images:
        raise ValueError(f"no images found in {', '.join(map(str, dirs))}")
    return images


def export_vision(
    out_dir: str | Path,
    encoder_family: str = "efficientnet-lite0",
    weights: str | Path | None = None,
    normals_dirs: Sequence[str | Path] = (),
    input_size: int | None = None,
    steps: int = 400,
    samples: int = 320,
    seed: int = 0,
    overwrite: bool = False,
    statistics_stages: Sequence[str] = DEFAULT_STATISTICS_STAGES,
) -> Bundle:
    unknown = sorted(set(statistics_stages) - set(STAGE_NAMES))
    if unknown or not statistics_stages:
        raise ExportOptionError(f"statistics stages must be a non-empty subset of {', '.join(STAGE_NAMES)}; got "
                         f"{', '.join(statistics_stages) or 'none'}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty (use --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    encoder = build_encoder(encoder_family, weights)
    preprocessing = encoder.preprocessing
    if input_size is not None:
        # validated (model_copy would not be): a size the manifest refuses fails here, not at the first open
        preprocessing = Preprocessing.model_validate({**preprocessing.model_dump(), "input_size": (input_size, input_size)})
    size = preprocessing.input_size
    stages = encoder.stage_specs(size)
    if encoder_family == "clip":
        from lineguard.export.encoders import load_clip

        normal, abnormal, proto_spec = clip_prototypes(load_clip(Path(weights)), str(weights))
    else:
        normal, abnormal, proto_spec = minilm_prototypes()
    decoder = AnomalyDecoder(stages, normal, abnormal, size)

    normals = load_normals(normals_dirs) if normals_dirs else default_training_set(seed=seed)
    report = train_decoder(encoder, decoder, normals, preprocessing, steps=steps, samples=samples, seed=seed)

    pre = Preprocessor(preprocessing)
    sample = pre(normals[:2])
    example = torch.from_numpy(sample)
    export_onnx(encoder, (example,), out / "encoder.onnx", ["image"], list(STAGE_NAMES))
    with torch.no_grad():
        feats = tuple(f.contiguous() for f in encoder(example))
    export_onnx(decoder.for_export(), feats, out / "decoder.onnx", list(STAGE_NAMES), ["anomaly_prob"])
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, sample.shape).astype(np.float32)
    diffs = {
        "encoder": max(onnx_parity(encoder, out / "encoder.onnx", {"image": x}) for x in (sample, noise)),
        "decoder": onnx_parity(decoder, out / "decoder.onnx", {n: f.numpy() for n, f in zip(STAGE_NAMES, feats, strict=True)}),
    }
    parity = ParitySummary(tolerance=PARITY_TOLERANCE, max_abs_diff=diffs,
                           passed=all(d <= PARITY_TOLERANCE for d in diffs.values()))
    (out / "parity.json").write_text(json.dumps({"reference": "pytorch-eager-fp32", "backend": "onnxruntime-cpu",
                                                  **parity.model_dump()}, indent=2))
    np.savez(out / "prototypes.npz", normal=normal, abnormal=abnormal)
    save_decoder_state(decoder, out / DECODER_STATE)

    by_name = {s.name: s for s in stages}
    manifest = BundleManifest(
        schema_version=SCHEMA_VERSION,
        bundle_id=new_bundle_id(),
        created_at=utc_now(),
        encoder=EncoderSpec(family=encoder_family, stages=stages),
        decoder=DecoderSpec(text_dim=decoder.text_dim, logit_scale=LOGIT_SCALE, train_images=report.images,
                            train_steps=report.steps, final_loss=report.final_loss),
        preprocessing=preprocessing,
        prototypes=proto_spec,
        scoring=ScoringSpec(memory_stages=[n for n in ("s2", "s3") if n in by_name],
                            statistics_stages=[n for n in STAGE_NAMES if n in statistics_stages and n in by_name]),
        parity=parity,
        exporter={"lineguard": lineguard.__version__, "torch": torch.__version__,
                  "onnxruntime": onnxruntime.__version__, "onnx_opset": str(OPSET), "python": platform.python_version()},
    )
    if not parity.passed:  # the manifest is what makes a folder a bundle: without it nothing loads this one
        (out / PARITY_FAILED_NAME).write_text(f"ONNX vs PyTorch max abs diff {diffs} exceeds {PARITY_TOLERANCE}\n")
        raise ParityError(f"ONNX vs PyTorch max abs diff {diffs} exceeds tolerance {PARITY_TOLERANCE}; see "
                          f"{out / 'parity.json'} (no manifest written: {out} is not a loadable bundle)")
    bundle = Bundle(out.resolve(), manifest)
    for name in ("encoder.onnx", "decoder.onnx", "prototypes.npz", "parity.json", DECODER_STATE):
        bundle.register_file(name)
    bundle.write_manifest()
    return bundle
