"""Which inference backend runs a bundle here, and why: TensorRT engines, ONNX Runtime or Triton.

Usage::

    from lineguard.runtime.inference.selection import choose_backend, probe_device
    choice = choose_backend("auto", bundle.manifest, probe_device())
    choice.backend          # "tensorrt" | "onnxruntime" | "triton"
    choice.engines          # {"encoder": EngineRecord, "decoder": EngineRecord} for TensorRT
    choice.reasons          # e.g. ["encoder.fp16: built for NVIDIA A100 (sm 8.0), running on Orin (sm 8.7)"]

The decision is pure (:func:`choose_backend` takes a described device, so tests describe any GPU);
only :func:`probe_device` looks at the machine, importing ``tensorrt`` and ``cuda-python`` lazily so
that a CPU-only install never needs them. Rules:

* ``tensorrt`` is taken (``auto``) when every model of the chain has an engine built from the bundle's
  current ONNX graph, on this GPU model and compute capability, with this exact TensorRT version (an
  engine is not portable across either), whose parity against ONNX Runtime passed; among several,
  the first precision of ``precision_order`` wins per model.
* otherwise ONNX Runtime with the best provider this install has (TensorRT EP, CUDA EP, CPU), and the
  reasons the engines were passed over are logged.
* ``triton`` only when asked for, with a server URL; ``tensorrt`` asked for but impossible raises
  :class:`BackendUnavailableError` naming every reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict

from lineguard.runtime.bundle import BackendName, BundleManifest, EngineRecord, Precision, RequestedBackend
from lineguard.runtime.inference.base import CHAIN_MODELS, BackendUnavailableError, GpuInfo, RunningDevice
from lineguard.runtime.inference.ort_backend import select_providers

log = logging.getLogger(__name__)

# Preferred first; each engine already had to pass its parity check against ONNX Runtime to qualify.
# INT8 only when a line asks for it (inference.precisions): its features drift from the FP32 ones the
# enrolled memories and the p-value calibration were made with, so it must be evaluated before use.
PRECISION_ORDER: tuple[Precision, ...] = ("fp16", "fp32")


class BackendChoice(BaseModel):
    """The backend that runs a bundle here, what it runs (engines, providers or server) and why."""

    model_config = ConfigDict(frozen=True)

    backend: BackendName
    engines: dict[str, EngineRecord] = {}
    providers: list[str] = []
    triton_url: str | None = None
    reasons: list[str] = []

    def summary(self) -> str:
        if self.backend == "tensorrt":
            what = ", ".join(f"{m} {r.precision} ({r.file})" for m, r in self.engines.items())
        elif self.backend == "onnxruntime":
            what = ", ".join(self.providers)
        else:
            what = str(self.triton_url)
        why = f" because {'; '.join(self.reasons)}" if self.reasons else ""
        return f"{self.backend}: {what}{why}"


def engine_mismatch(record: EngineRecord, onnx_sha256: str | None, device: RunningDevice) -> str | None:
    """Why this engine cannot run here, or None when it can."""
    label = f"{record.model}.{record.precision} ({record.file})"
    if onnx_sha256 is None or record.onnx_sha256 != onnx_sha256:
        return f"{label}: built from another {record.model} ONNX graph than the bundle's"
    if not record.parity_passed:
        return (f"{label}: failed parity vs ONNX Runtime (relative diff {record.parity_relative_diff:.3g} > "
                f"{record.parity_tolerance:.3g})")
    if device.gpu is None:
        return f"{label}: no CUDA GPU here ({device.gpu_error or 'none found'})"
    if device.tensorrt_version is None:
        return f"{label}: TensorRT is not importable here ({device.tensorrt_error or 'not installed'})"
    gpu = device.gpu
    if record.gpu_name != gpu.name or record.compute_capability != gpu.compute_capability:
        return (f"{label}: built for {record.gpu_name} (sm {record.compute_capability}), "
                f"running on {gpu.name} (sm {gpu.compute_capability})")
    if record.tensorrt_version != device.tensorrt_version:
        return f"{label}: built with TensorRT {record.tensorrt_version}, running TensorRT {device.tensorrt_version}"
    return None


def usable_engines(manifest: BundleManifest, device: RunningDevice,
                   precision_order: Sequence[Precision] = PRECISION_ORDER) -> tuple[dict[str, EngineRecord], list[str]]:
    """Per chain model, the best engine that runs here, and the reasons for every one passed over."""
    onnx_files = {"encoder": manifest.encoder.file, "decoder": manifest.decoder.file}
    current = {model: (manifest.files[f].sha256 if f in manifest.files else None) for model, f in onnx_files.items()}
    rank = {p: i for i, p in enumerate(precision_order)}
    chosen: dict[str, EngineRecord] = {}
    reasons: list[str] = []
    for model in CHAIN_MODELS:
        candidates = sorted((r for r in manifest.engines if r.model == model),
                            key=lambda r: (rank.get(r.precision, len(rank)), -r.max_batch))
        for record in candidates:
            if record.precision not in rank:
                reasons.append(f"{model}.{record.precision} ({record.file}): precision not in {list(precision_order)}")
                continue
            why = engine_mismatch(record, current[model], device)
            if why is None:
                chosen[model] = record
                break
            reasons.append(why)
        if not candidates:
            reasons.append(f"no TensorRT engine for the {model} (build them with `lineguard export trt`)")
    return chosen, reasons


def choose_backend(requested: RequestedBackend, manifest: BundleManifest, device: RunningDevice,
                   triton_url: str | None = None,
                   precision_order: Sequence[Precision] = PRECISION_ORDER) -> BackendChoice:
    """The backend for this bundle on this device (see the module docstring for the rules)."""
    if requested not in get_args(RequestedBackend):
        raise BackendUnavailableError(f"unknown backend {requested!r}; choose one of "
                                      f"{', '.join(get_args(RequestedBackend))}")
    if requested == "triton":
        if not triton_url:
            raise BackendUnavailableError("backend triton needs a server URL (line config inference.triton_url "
                                          "or --triton-url)")
        return BackendChoice(backend="triton", triton_url=triton_url, reasons=["requested"])
    reasons: list[str] = []
    if requested in ("auto", "tensorrt"):
        engines, reasons = usable_engines(manifest, device, precision_order)
        if all(model in engines for model in CHAIN_MODELS):
            return BackendChoice(backend="tensorrt", engines=engines,
                                 reasons=["engines match this GPU and TensorRT version"])
        if requested == "tensorrt":
            raise BackendUnavailableError("TensorRT cannot run this bundle here: " + "; ".join(reasons))
    else:
        reasons = ["requested"]
    providers = select_providers(list(device.onnxruntime_providers))
    return BackendChoice(backend="onnxruntime", providers=providers, reasons=reasons)


def onnxruntime_provider_options(providers: Sequence[str], engine_cache_dir: Path | None,
                                 fp16: bool = False) -> list[str | tuple[str, dict[str, Any]]]:
    """ONNX Runtime providers with their options: the TensorRT EP keeps its engines and timing cache in
    ``engine_cache_dir`` (built once per GPU and shape, reused by later starts) instead of rebuilding.
    The folder is created here with its parents: the EP creates only the last level and throws when the
    parent is missing, and ONNX Runtime's Python wrapper then quietly retries with the CUDA/CPU EPs."""
    configured: list[str | tuple[str, dict[str, Any]]] = []
    for name in providers:
        if name == "TensorrtExecutionProvider" and engine_cache_dir is not None:
            engine_cache_dir.mkdir(parents=True, exist_ok=True)
            cache = str(engine_cache_dir)
            configured.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                      "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                                      "trt_fp16_enable": fp16}))
        else:
            configured.append(name)
    return configured


def probe_device() -> RunningDevice:
    """Describe this machine: GPU (cuda-python), TensorRT version, ONNX Runtime providers. Never raises."""
    import onnxruntime as ort

    gpu: GpuInfo | None = None
    gpu_error: str | None = None
    try:
        from lineguard.runtime.inference.cuda_runtime import describe_gpu

        gpu = describe_gpu()
    except Exception as exc:  # ImportError (no cuda-python) or CudaError (no driver / device)
        gpu_error = f"{type(exc).__name__}: {exc}"
    trt_version: str | None = None
    trt_error: str | None = None
    try:
        import tensorrt

        trt_version = str(tensorrt.__version__)
    except Exception as exc:  # ImportError, or OSError when libnvinfer is missing
        trt_error = f"{type(exc).__name__}: {exc}"
    return RunningDevice(gpu=gpu, gpu_error=gpu_error, tensorrt_version=trt_version, tensorrt_error=trt_error,
                         onnxruntime_providers=usable_onnxruntime_providers(
                             ort.get_available_providers(), ort.__version__, trt_version))


def usable_onnxruntime_providers(available: Sequence[str], ort_version: str,
                                 tensorrt_version: str | None) -> tuple[str, ...]:
    """ONNX Runtime's providers less the TensorRT EP where this TensorRT is not the one ONNX Runtime was
    built for (it would fail at session creation and be replaced silently); the reason is logged."""
    from lineguard.runtime.inference.gpu_packages import onnxruntime_conflict, ort_tensorrt_mismatch

    conflict = onnxruntime_conflict()
    if conflict:
        log.warning("%s", conflict)
    providers = tuple(available)
    if "TensorrtExecutionProvider" in providers:
        # unknown TensorRT (no Python bindings, the libraries may still be there): the EP is left to try
        why = ort_tensorrt_mismatch(ort_version, tensorrt_version) if tensorrt_version else None
        if why:
            log.warning("ONNX Runtime's TensorRT EP left out: %s", why)
            providers = tuple(p for p in providers if p != "TensorrtExecutionProvider")
    return providers
