"""Open the backends that run a bundle's encoder and decoder, as chosen by backend_selection.

Usage::

    models = open_chain_backends(bundle, "auto")
    models.choice.summary()      # "onnxruntime: CPUExecutionProvider because no TensorRT engine for the encoder ..."
    models.encoder.run({"image": batch}); models.decoder.run(features)
    models = open_chain_backends(bundle, "triton", triton_url="triton:8001")
    models.decoder is None       # the Triton ensemble returns features and the map in one call

On a GPU, ``models.device_chain`` runs encoder and decoder with the features kept on the device
(TensorRT: the decoder reads the encoder's output buffers; ONNX Runtime CUDA/TensorRT EP: IO binding
with OrtValues on cuda); it is None where there is no device to keep them on (CPU, Triton).

Never a crash for a mismatch: when ``auto`` picked TensorRT but an engine does not load here (a
driver or library problem the metadata could not show), the chain falls back to ONNX Runtime and
logs why. An explicit ``tensorrt`` or ``triton`` that cannot run raises BackendUnavailableError.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from lineguard.runtime.backend_selection import (
    PRECISION_ORDER,
    BackendChoice,
    BackendUnavailableError,
    Precision,
    RequestedBackend,
    RunningDevice,
    choose_backend,
    onnxruntime_provider_options,
    probe_device,
    usable_onnxruntime_providers,
)
from lineguard.runtime.backends import OnnxRuntimeBackend, OrtBoundChain, select_providers
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.cpu_precision import CpuPrecision, choose_cpu_models
from lineguard.runtime.gpu_packages import installed_tensorrt_version
from lineguard.runtime.ort_threading import OrtThreading

log = logging.getLogger(__name__)


class ModelBackend(Protocol):
    input_names: list[str]
    output_names: list[str]
    providers: list

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class DeviceChain(Protocol):
    """Encoder then decoder with the features kept on the device; only ``host_outputs`` come back."""

    def run(self, inputs: dict[str, np.ndarray],
            host_outputs: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]: ...


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass
class ChainBackends:
    choice: BackendChoice
    encoder: ModelBackend
    decoder: ModelBackend | None  # None: ``encoder`` runs the whole chain (Triton ensemble)
    device_chain: DeviceChain | None = None  # features stay on the GPU (None on CPU and Triton)


def default_engine_cache_dir(bundle_id: str) -> Path:
    """Where ONNX Runtime's TensorRT EP keeps the engines it builds: the user's cache, never the bundle."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lineguard" / "ort-tensorrt" / bundle_id


def _describe_device(requested: RequestedBackend, bundle: Bundle) -> RunningDevice:
    """Probe the GPU only when engines could be chosen (probing imports tensorrt and cuda-python)."""
    if requested in ("auto", "tensorrt") and bundle.manifest.engines:
        return probe_device()
    # without importing tensorrt: its installed version (package metadata) still vets ORT's TensorRT EP
    return RunningDevice(onnxruntime_providers=usable_onnxruntime_providers(
        ort.get_available_providers(), ort.__version__, installed_tensorrt_version()))


def open_chain_backends(bundle: Bundle, requested: RequestedBackend = "auto", providers: list[str] | None = None,
                        threads: int | OrtThreading | None = None, triton_url: str | None = None, triton_model: str | None = None,
                        engine_cache_dir: Path | None = None, device: RunningDevice | None = None,
                        precisions: Sequence[Precision] = PRECISION_ORDER, cpu_precision: CpuPrecision = "fp32",
                        products: Sequence[str] | None = None) -> ChainBackends:
    """``cpu_precision``/``products``: a reduced-precision graph on ONNX Runtime's CPU provider where it
    passed its check on every product served (lineguard.runtime.cpu_precision); else FP32, with why."""
    manifest = bundle.manifest
    if providers is not None and requested == "auto":
        requested = "onnxruntime"  # explicit ONNX Runtime providers mean ONNX Runtime
    choice = choose_backend(requested, manifest, device or _describe_device(requested, bundle), triton_url,
                            precision_order=precisions)
    if choice.backend == "tensorrt":
        from lineguard.runtime.tensorrt_backend import TensorRTBackend, TensorRTChain, TensorRTError

        encoder = None
        try:
            # each backend makes its first context, stream and buffers here: a failure falls back now
            encoder = TensorRTBackend(bundle.path(choice.engines["encoder"].file))
            decoder = TensorRTBackend(bundle.path(choice.engines["decoder"].file))
            try:
                fused: DeviceChain | None = TensorRTChain(encoder, decoder)
            except TensorRTError as exc:
                log.warning("TensorRT encoder and decoder cannot share buffers (%s): features go through the host",
                            exc)
                fused = None
            log.info("backend %s", choice.summary())
            return ChainBackends(choice, encoder, decoder, fused)
        except (RuntimeError, ImportError, OSError, ValueError) as exc:  # TensorRTError, CudaError, TensorRT's own
            if encoder is not None:  # its GPU buffers, streams and contexts are not needed by the fallback
                encoder.close()
            if requested == "tensorrt":
                raise BackendUnavailableError(f"TensorRT engines do not load here: {exc}") from exc
            choice = BackendChoice(backend="onnxruntime", providers=select_providers(),
                                   reasons=[f"TensorRT engines matched but did not load: {exc}"])
    if choice.backend == "triton":
        from lineguard.runtime.triton_backend import TritonBackend, TritonError, default_model_name

        try:
            remote = TritonBackend(str(choice.triton_url), triton_model or default_model_name(manifest.bundle_id),
                                   bundle_id=manifest.bundle_id)
        except TritonError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        log.info("backend %s", choice.summary())
        return ChainBackends(choice, remote, None)
    names = providers or choice.providers
    configured = onnxruntime_provider_options(
        names, engine_cache_dir or default_engine_cache_dir(manifest.bundle_id)) if providers is None else names
    files, cpu_reasons = {"encoder": manifest.encoder.file, "decoder": manifest.decoder.file}, []
    if cpu_precision != "fp32":
        if any(p in GPU_PROVIDERS for p in names):
            cpu_reasons = [f"{cpu_precision} graphs are checked for the CPU provider: FP32 on the GPU"]
        else:
            files, cpu_reasons = choose_cpu_models(bundle, cpu_precision, products)
    encoder = OnnxRuntimeBackend(bundle.path(files["encoder"]), configured, threads)
    decoder = OnnxRuntimeBackend(bundle.path(files["decoder"]), configured, threads)
    running = encoder.session.get_providers()
    choice = choice.model_copy(update={"providers": running, "reasons": [*choice.reasons, *cpu_reasons]})
    (log.warning if manifest.engines and requested == "auto" else log.info)("backend %s", choice.summary())
    on_gpu = any(p in GPU_PROVIDERS for p in running) and any(p in GPU_PROVIDERS for p in decoder.session.get_providers())
    return ChainBackends(choice, encoder, decoder, OrtBoundChain(encoder, decoder, "cuda") if on_gpu else None)
