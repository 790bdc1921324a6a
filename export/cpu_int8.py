"""``lineguard export int8``: an INT8 encoder for ONNX Runtime on the CPU, calibrated on a product's
normals, which has to earn its place: it is checked against FP32 on held-out images of the product.

Usage::

    from lineguard.export.cpu_int8 import export_int8
    record = export_int8("bundles/default", product="tile", data_root="data", category="tile")
    record.checks["tile"].passed, record.checks["tile"].verdict_agreement, record.feature_relative_diff

ONNX Runtime's static quantisation (QDQ, per-channel INT8 weights, UINT8 activations, ranges from the
product's ``train/good`` normals run through the bundle's own preprocessing) writes
``encoder.int8.onnx``; the decoder stays FP32 (a few ms). The check runs the product's enrolled memory
and calibration with both encoders over ``test/*`` of an MVTec-style folder: it passes only when every
verdict equals FP32's and the image AUROC is not lower (``AUROC_TOLERANCE``). Both go into the manifest
(``cpu_models``), and a line runs the INT8 graph only with ``inference.cpu_precision: int8`` and only
while every product it serves has a passed check with its current memory (lineguard.runtime.inference.cpu_precision).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from lineguard.evaluation.mvtec_layout import labelled_test_images
from lineguard.runtime.bundle import Bundle, CpuModelRecord, PrecisionCheck, utc_now
from lineguard.runtime.image_io import image_paths, read_image, read_images
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.tiling import images_as_tiles
from lineguard.runtime.scoring.inspector import Inspector

INT8_ENCODER = "encoder.int8.onnx"
AUROC_TOLERANCE = 0.005  # image AUROC may not drop by more than this (ties and rounding on a few images)
MAX_CALIBRATION = 64


class Int8ExportError(ValueError):
    """The INT8 graph cannot be made or checked (no normals, product not enrolled, ...)."""


def quantize_encoder(bundle: Bundle, normals: Sequence[np.ndarray], out_file: str = INT8_ENCODER) -> CpuModelRecord:
    """Quantise the bundle's encoder, calibrated on ``normals`` (BGR uint8); returns its record (no checks)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(normals) < 2:
        raise Int8ExportError("INT8 calibration needs at least 2 normal images")
    manifest = bundle.manifest
    chain = VisionChain(bundle, providers=["CPUExecutionProvider"])
    held_out = normals[-1:]
    calibration = chain.preprocessor(list(normals[:-1])[:MAX_CALIBRATION])
    name = manifest.encoder.input_name

    class Normals(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.pending, None)
            return None if image is None else {name: image[None]}

    with tempfile.TemporaryDirectory(prefix="lineguard-int8-") as scratch:
        prepared = Path(scratch) / "encoder.prepared.onnx"
        quant_pre_process(str(bundle.path(manifest.encoder.file)), str(prepared))
        quantize_static(str(prepared), str(bundle.path(out_file)), Normals(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend

    quantised = OnnxRuntimeBackend(bundle.path(out_file), ["CPUExecutionProvider"])
    pixels = chain.preprocessor(list(held_out))
    want, got = chain.encoder.run({name: pixels}), quantised.run({name: pixels})
    diff = max(float(np.abs(got[k] - want[k]).max() / max(float(np.abs(want[k]).max()), 1e-12)) for k in want)
    return CpuModelRecord(model="encoder", precision="int8", file=out_file,
                          onnx_sha256=manifest.files[manifest.encoder.file].sha256,
                          calibration_images=len(calibration), feature_relative_diff=diff)


def check_precision(bundle: Bundle, product: str, record: CpuModelRecord,
                    items: Sequence[tuple[Path, int]], batch_size: int = 8) -> PrecisionCheck:
    """FP32 and the reduced-precision encoder on the same images with the product's enrolled memory."""
    entry = bundle.manifest.products.get(product)
    if entry is None:
        raise Int8ExportError(f"product {product!r} is not enrolled in this bundle: enrol it first")
    fp32 = Inspector(bundle, chain=VisionChain(bundle, providers=["CPUExecutionProvider"]))
    reduced_chain = VisionChain(bundle, providers=["CPUExecutionProvider"])
    from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend

    reduced_chain.encoder = OnnxRuntimeBackend(bundle.path(record.file), ["CPUExecutionProvider"])
    reduced = Inspector(bundle, chain=reduced_chain)
    verdicts: dict[str, list[int]] = {"fp32": [], "reduced": []}
    scores: dict[str, list[float]] = {"fp32": [], "reduced": []}
    for b in range(0, len(items), batch_size):
        images = [read_image(path) for path, _ in items[b : b + batch_size]]
        for name, inspector in (("fp32", fp32), ("reduced", reduced)):
            for result in inspector.analyze(images, product):
                verdicts[name].append(int(result.verdict.verdict == "NG"))
                scores[name].append(result.verdict.score)
    labels = np.array([label for _, label in items])
    both_classes = len(set(labels.tolist())) == 2
    auroc = {name: float(roc_auc_score(labels, s)) if both_classes else None for name, s in scores.items()}
    agreement = float(np.mean(np.array(verdicts["fp32"]) == np.array(verdicts["reduced"])))
    holds = auroc["reduced"] is None or auroc["fp32"] is None or auroc["reduced"] >= auroc["fp32"] - AUROC_TOLERANCE
    return PrecisionCheck(
        product=product, memory_sha256=bundle.manifest.files[entry.memory_file].sha256, n_images=len(items),
        verdict_agreement=agreement, image_auroc_fp32=auroc["fp32"], image_auroc=auroc["reduced"],
        accuracy_fp32=float(np.mean(np.array(verdicts["fp32"]) == labels)),
        accuracy=float(np.mean(np.array(verdicts["reduced"]) == labels)),
        passed=agreement == 1.0 and holds, checked_at=utc_now())


def record_cpu_model(bundle: Bundle, record: CpuModelRecord) -> None:
    """Add (or replace) the record and its file's checksum, then rewrite the manifest."""
    kept = [r for r in bundle.manifest.cpu_models if r.file != record.file]
    bundle.manifest = bundle.manifest.model_copy(update={"cpu_models": [*kept, record]})
    bundle.register_file(record.file)
    bundle.write_manifest()


def export_int8(bundle_dir: str | Path, product: str, data_root: str | Path, category: str | None = None) -> CpuModelRecord:
    """Quantise the encoder on ``<data_root>/<category>/train/good`` and check it on ``test/*`` for
    ``product`` (enrolled already). A previous INT8 encoder of the same graph keeps its other products'
    checks only when it is not re-quantised: here it is, so only this product's check is recorded."""
    category_dir = Path(data_root) / (category or product)
    normals = read_images(image_paths(category_dir / "train" / "good"))
    bundle = Bundle.open(bundle_dir)
    if product not in bundle.manifest.products:
        raise Int8ExportError(f"product {product!r} is not enrolled in {bundle_dir}: enrol it first")
    # (image, 1 if defective) for every image under test/<type>/ ("good" is normal): eval's own reader of the layout
    items = [(path, int(kind != "good")) for path, kind, _ in labelled_test_images(category_dir)]
    # a tiled product's encoder sees tiles: its activations are calibrated on those
    seen = images_as_tiles(normals, bundle.manifest.products[product].tiles, bundle.manifest.preprocessing.input_size)
    record = quantize_encoder(bundle, seen)
    record_cpu_model(bundle, record)
    bundle = Bundle.open(bundle_dir)
    check = check_precision(bundle, product, record, items)
    record = record.model_copy(update={"checks": {product: check}})
    record_cpu_model(bundle, record)
    return record
