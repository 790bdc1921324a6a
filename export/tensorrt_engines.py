"""``lineguard export trt``: TensorRT engines from a bundle's encoder and decoder ONNX, recorded in its manifest.

Usage::

    from lineguard.export.tensorrt_engines import export_tensorrt
    records = export_tensorrt("bundles/default", precisions=("fp32", "fp16"), max_batch=8)
    records = export_tensorrt("bundles/default", precisions=("fp32", "int8"), calib_dir="data/tile/train/good")
    [(r.model, r.precision, r.file, r.parity_passed) for r in records]

Per model and precision, with the TensorRT Python API: an explicit-batch network from the ONNX
parser (a graph it cannot import fails with one line per offending node), one or more identical
optimisation profiles for batch 1..N (one per concurrent inference worker), the workspace limit,
FP16, or INT8 with an entropy calibrator fed from normal images, and a timing cache persisted beside
the engines so a rebuild on the same GPU skips kernel timing. Each engine is checked against ONNX
Runtime (CPU, FP32) on sample inputs; the result goes to ``parity.json`` and to the engine's record
(an engine that fails parity stays in the bundle but the runtime never selects it; the FP32 engine is
always built as the fallback). Engines land in ``engines/<gpu>-sm<cc>-trt<version>/`` and the
manifest records GPU name, compute capability, TensorRT and CUDA versions for backend selection.

TensorRT 10.x is the target (JetPack 6 ships 10.3): TensorRT 11 removed the weakly typed FP16 flag and
the INT8 calibrators (strongly typed networks only); FP32 engines build there, FP16/INT8 are refused
with that reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.runtime.bundle import Bundle, EngineRecord, Precision, utc_now
from lineguard.runtime.image_io import image_paths, read_images
from lineguard.runtime.inference.base import GpuInfo
from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend
from lineguard.runtime.inference.preprocess import Preprocessor
from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend, import_tensorrt

log = logging.getLogger(__name__)

# Relative tolerance (max abs diff / max abs reference) of an engine vs ONNX Runtime FP32, by precision.
# FP32 engines differ only by kernel reordering; FP16 keeps ~3 significant digits; INT8 is coarser still.
PARITY_TOLERANCE: dict[str, float] = {"fp32": 1e-3, "fp16": 3e-2, "int8": 1.5e-1}
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine; the message says which model and why."""


@dataclass(frozen=True)
class ParserIssue:
    """One error of TensorRT's ONNX parser, with the node it is about."""

    node_index: int
    node_name: str
    operator: str
    code: str
    description: str

    def __str__(self) -> str:
        where = f"node {self.node_index}" if self.node_index >= 0 else "graph"
        named = f" {self.node_name!r}" if self.node_name else ""
        op = f" ({self.operator})" if self.operator else ""
        return f"{where}{named}{op}: {self.description} [{self.code}]"


class OnnxParseError(EngineBuildError):
    """TensorRT's ONNX parser refused the graph; ``issues`` holds one entry per error."""

    def __init__(self, onnx_path: Path, issues: Sequence[ParserIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"TensorRT cannot parse {onnx_path.name} ({len(self.issues)} error(s)):\n{lines}")


@dataclass(frozen=True)
class EngineSpec:
    precision: Precision
    max_batch: int = 8
    opt_batch: int | None = None
    profiles: int = 1
    workspace_mb: int = 2048

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.max_batch < 1 or self.profiles < 1 or self.workspace_mb < 1:
            raise ValueError("max_batch, profiles and workspace_mb must be positive")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"opt_batch {self.opt_batch} must be within 1..max_batch ({self.max_batch})")

    @property
    def optimum(self) -> int:
        return self.opt_batch or self.max_batch


class CalibrationBatches:
    """Fixed-size float32 batches of calibration inputs, as an INT8 calibrator hands them to TensorRT.

    ``inputs`` maps each network input to an array of N samples; every batch holds exactly
    ``batch_size`` samples (the calibration profile is fixed to that shape), so the N % batch_size
    samples left over are dropped and counted in ``dropped``."""

    def __init__(self, inputs: dict[str, np.ndarray], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("calibration batch_size must be positive")
        counts = {name: len(array) for name, array in inputs.items()}
        if not counts or len(set(counts.values())) != 1:
            raise ValueError(f"calibration inputs must all hold the same number of samples, got {counts}")
        n = next(iter(counts.values()))
        if n < batch_size:
            raise ValueError(f"{n} calibration sample(s) cannot fill one batch of {batch_size}")
        self.inputs = {name: np.asarray(array, dtype=np.float32) for name, array in inputs.items()}
        self.batch_size = batch_size
        self.batches = n // batch_size
        self.dropped = n - self.batches * batch_size

    def __len__(self) -> int:
        return self.batches

    def shape(self, name: str) -> tuple[int, ...]:
        return (self.batch_size, *self.inputs[name].shape[1:])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for b in range(self.batches):
            window = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield {name: np.ascontiguousarray(array[window]) for name, array in self.inputs.items()}


class CalibrationCache:
    """TensorRT's INT8 calibration cache, valid only for the ONNX graph and TensorRT version it was made
    with: a sidecar ``<cache>.json`` records both, and a cache whose record differs (or is missing) is
    not handed to TensorRT, which then calibrates afresh and overwrites it."""

    def __init__(self, path: Path, onnx_sha256: str, tensorrt_version: str) -> None:
        self.path = Path(path)
        self.record_path = self.path.with_name(self.path.name + ".json")
        self.key = {"onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version}

    def read(self) -> bytes | None:
        if not self.path.is_file():
            return None
        try:
            recorded = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != self.key:
            log.warning("%s was made for %s, not %s: calibrating afresh", self.path.name, recorded, self.key)
            return None
        return self.path.read_bytes()

    def write(self, cache: bytes) -> None:
        self.path.write_bytes(cache)
        self.record_path.write_text(json.dumps(self.key, indent=2))


def make_entropy_calibrator(trt: Any, batches: CalibrationBatches, cache: CalibrationCache) -> Any:
    """An ``IInt8EntropyCalibrator2`` that copies each batch to the GPU and caches the scales."""
    from lineguard.runtime.inference.cuda_runtime import DeviceBuffer, PinnedBuffer, Stream

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.stream = Stream()
            self.host = {name: PinnedBuffer(batches.shape(name), np.float32) for name in batches.inputs}
            self.device = {name: DeviceBuffer(self.host[name].nbytes) for name in batches.inputs}
            self.pending = iter(batches)

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.pending, None)
            if batch is None:
                return None
            for name in names:
                np.copyto(self.host[name].array, batch[name])
                self.device[name].copy_from_host_async(self.host[name], self.stream)
            self.stream.synchronize()
            return [self.device[name].pointer for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

    return EntropyCalibrator()


def describe_parser_error(error: Any) -> ParserIssue:
    """TensorRT's IParserError as a ParserIssue (node_name/node_operator exist from TensorRT 10)."""
    return ParserIssue(
        node_index=int(error.node()),
        node_name=str(error.node_name()) if hasattr(error, "node_name") else "",
        operator=str(error.node_operator()) if hasattr(error, "node_operator") else "",
        code=str(error.code()).rsplit(".", 1)[-1],
        description=str(error.desc()),
    )


def parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """An explicit-batch network from an ONNX file; OnnxParseError lists each node the parser refused.
    The parser is returned with the network: it owns weights the network refers to until the build."""
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # the default (and deprecated) from 10.0
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise OnnxParseError(onnx_path, [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)])
    return network, parser


def _network_inputs(network: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]


def _profile(builder: Any, inputs: list[tuple[str, tuple[int, ...]]], lo: int, opt: int, hi: int) -> Any:
    profile = builder.create_optimization_profile()
    for name, shape in inputs:
        if any(d < 0 for d in shape[1:]):
            raise EngineBuildError(f"input {name} has dynamic non-batch dimensions {shape}: re-export with fixed sizes")
        rest = shape[1:]
        profile.set_shape(name, (lo, *rest), (opt, *rest), (hi, *rest))
    return profile


def configure_precision(trt: Any, config: Any, spec: EngineSpec, calibration: CalibrationBatches | None = None,
                        calibration_cache: CalibrationCache | None = None) -> None:
    """Builder flags for ``spec.precision``. FP32 clears TF32 (on by default in TensorRT: on Ampere and
    Orin it rounds matmul/conv inputs to 10-bit mantissas, ~1e-2 relative error against the 1e-3 FP32
    parity tolerance); FP16/INT8 keep it for the layers they leave in FP32."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if spec.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
        return
    if spec.precision in ("fp16", "int8"):
        flag = "FP16" if spec.precision == "fp16" else "INT8"
        if not hasattr(trt.BuilderFlag, flag):
            raise EngineBuildError(f"TensorRT {trt.__version__} has no BuilderFlag.{flag} (removed in 11.x with weak "
                                   "typing): build FP32, or use TensorRT 10.x for FP16/INT8 engines")
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 too: layers without INT8 kernels fall back to FP16
        if spec.precision == "int8":
            if calibration is None or calibration_cache is None:
                raise EngineBuildError("an INT8 engine needs calibration data (--calib DIR of normal images)")
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = make_entropy_calibrator(trt, calibration, calibration_cache)


def build_engine(onnx_path: Path, plan_path: Path, spec: EngineSpec, timing_cache_path: Path,
                 calibration: CalibrationBatches | None = None, calibration_cache: CalibrationCache | None = None) -> Path:
    """Build and serialize one engine to ``plan_path``; the timing cache is read and written back."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    configure_precision(trt, config, spec, calibration, calibration_cache)
    inputs = _network_inputs(network)
    for _ in range(spec.profiles):
        config.add_optimization_profile(_profile(builder, inputs, 1, spec.optimum, spec.max_batch))
    if spec.precision == "int8" and calibration is not None:
        config.set_calibration_profile(_profile(builder, inputs, calibration.batch_size, calibration.batch_size,
                                                calibration.batch_size))
    cache = config.create_timing_cache(timing_cache_path.read_bytes() if timing_cache_path.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # a cache from another device: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {onnx_path.name} as {spec.precision} (see the log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(memoryview(serialized))
    timing_cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return plan_path


def device_folder(gpu: GpuInfo, tensorrt_version: str) -> str:
    """``engines/<gpu>-sm<cc>-trt<version>``: engines are specific to all three."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-") or "gpu"
    return f"engines/{slug}-sm{gpu.compute_capability.replace('.', '')}-trt{tensorrt_version}"


def relative_diff(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> tuple[float, float]:
    """(max abs diff, max abs diff / max abs reference) over every output."""
    max_abs = max(float(np.abs(candidate[k].astype(np.float64) - reference[k]).max()) for k in reference)
    scale = max(float(np.abs(reference[k]).max()) for k in reference)
    return max_abs, max_abs / max(scale, 1e-12)


def sample_inputs(bundle: Bundle, images: Sequence[np.ndarray], batch: int) -> dict[str, dict[str, np.ndarray]]:
    """Encoder and decoder inputs of the same images (decoder inputs from ONNX Runtime's encoder)."""
    manifest = bundle.manifest
    pre = Preprocessor(manifest.preprocessing)
    pixels = pre([images[i % len(images)] for i in range(batch)])
    encoder = OnnxRuntimeBackend(bundle.path(manifest.encoder.file), ["CPUExecutionProvider"])
    decoder = OnnxRuntimeBackend(bundle.path(manifest.decoder.file), ["CPUExecutionProvider"])
    features = encoder.run({manifest.encoder.input_name: pixels})
    return {"encoder": {manifest.encoder.input_name: pixels},
            "decoder": {name: features[name] for name in decoder.input_names}}


def engine_parity(bundle: Bundle, model: str, plan_path: Path, inputs: dict[str, np.ndarray]) -> tuple[float, float]:
    onnx_file = bundle.manifest.encoder.file if model == "encoder" else bundle.manifest.decoder.file
    reference = OnnxRuntimeBackend(bundle.path(onnx_file), ["CPUExecutionProvider"]).run(inputs)
    engine = TensorRTBackend(plan_path)
    try:
        return relative_diff(reference, engine.run(inputs))
    finally:
        engine.close()


def _default_images(seed: int = 3) -> list[np.ndarray]:
    from lineguard.export.textures import texture_variants

    return texture_variants("weave", 8, seed=seed)


def export_tensorrt(bundle_dir: str | Path, precisions: Sequence[Precision] = ("fp32",), max_batch: int = 8,
                    opt_batch: int | None = None, profiles: int = 1, workspace_mb: int = 2048,
                    calib_dir: str | Path | None = None, calib_batch: int = 8) -> list[EngineRecord]:
    """Build every model x precision engine for this GPU, check parity, record them in the manifest."""
    wanted = list(dict.fromkeys(["fp32", *precisions]))  # the FP32 fallback is always built
    specs = [EngineSpec(p, max_batch, opt_batch, profiles, workspace_mb) for p in wanted]
    calib_images: list[np.ndarray] = []
    if "int8" in wanted:
        if calib_dir is None:
            raise EngineBuildError("--int8 needs --calib DIR: a folder of normal images of the product")
        calib_images = read_images(image_paths(calib_dir))
        if len(calib_images) < calib_batch:
            raise EngineBuildError(f"{calib_dir} holds {len(calib_images)} image(s); INT8 calibration needs at least "
                                   f"{calib_batch} (one batch)")
    trt = import_tensorrt()
    from lineguard.runtime.inference.cuda_runtime import describe_gpu

    gpu = describe_gpu()
    cuda_version = gpu.cuda_runtime_version  # the system's CUDA, not the one inside cuda-python's wheel
    bundle = Bundle.open(bundle_dir)
    manifest = bundle.manifest
    folder = device_folder(gpu, trt.__version__)
    (bundle.root / folder).mkdir(parents=True, exist_ok=True)
    timing_cache = f"{folder}/timing.cache"
    parity_inputs = sample_inputs(bundle, calib_images or _default_images(), min(max_batch, 4))
    calibration: dict[str, CalibrationBatches] = {}
    if calib_images:
        calib_inputs = sample_inputs(bundle, calib_images, len(calib_images))
        calibration = {model: CalibrationBatches(arrays, calib_batch) for model, arrays in calib_inputs.items()}
    onnx_files = {"encoder": manifest.encoder.file, "decoder": manifest.decoder.file}
    records: list[EngineRecord] = []
    for spec in specs:
        for model, onnx_file in onnx_files.items():
            plan = f"{folder}/{model}.{spec.precision}.b{spec.max_batch}.plan"
            calib_cache = CalibrationCache(bundle.path(f"{folder}/{model}.int8.calib"),
                                           manifest.files[onnx_file].sha256, trt.__version__)
            build_engine(bundle.path(onnx_file), bundle.path(plan), spec, bundle.path(timing_cache),
                         calibration.get(model), calib_cache)
            max_abs, rel = engine_parity(bundle, model, bundle.path(plan), parity_inputs[model])
            tolerance = PARITY_TOLERANCE[spec.precision]
            records.append(EngineRecord(
                model=model, file=plan, onnx_sha256=manifest.files[onnx_file].sha256, precision=spec.precision,
                min_batch=1, opt_batch=spec.optimum, max_batch=spec.max_batch, profiles=spec.profiles,
                gpu_name=gpu.name, compute_capability=gpu.compute_capability, tensorrt_version=trt.__version__,
                cuda_version=cuda_version, workspace_mb=spec.workspace_mb, built_at=utc_now(),
                parity_max_abs_diff=max_abs, parity_relative_diff=rel, parity_tolerance=tolerance,
                parity_passed=rel <= tolerance,
            ))
    calib_caches = [f"{folder}/{model}.int8.calib{ext}" for model in onnx_files if calibration for ext in ("", ".json")]
    record_engines(bundle, records, extra_files=[timing_cache, *calib_caches])
    return records


def record_engines(bundle: Bundle, records: Sequence[EngineRecord], extra_files: Sequence[str] = ()) -> Bundle:
    """Add engine records (replacing any for the same file), their checksums, and their parity in
    ``parity.json``; then rewrite the manifest atomically. Files must already be in the bundle."""
    replaced = {r.file for r in records}
    engines = [e for e in bundle.manifest.engines if e.file not in replaced] + list(records)
    bundle.manifest = bundle.manifest.model_copy(update={"engines": engines})
    for relative in [*(r.file for r in records), *extra_files]:
        bundle.register_file(relative)
    parity_path = bundle.path("parity.json")
    parity = json.loads(parity_path.read_text()) if parity_path.is_file() else {}
    section = parity.setdefault("tensorrt", {"reference": "onnxruntime-cpu-fp32", "metric": "max abs diff / max abs "
                                             "reference, over every output", "engines": {}})
    for r in records:
        section["engines"][r.file] = {"model": r.model, "precision": r.precision, "gpu": r.gpu_name,
                                      "tensorrt": r.tensorrt_version, "max_abs_diff": r.parity_max_abs_diff,
                                      "relative_diff": r.parity_relative_diff, "tolerance": r.parity_tolerance,
                                      "passed": r.parity_passed}
    parity_path.write_text(json.dumps(parity, indent=2))
    bundle.register_file("parity.json")
    bundle.write_manifest()
    return bundle
