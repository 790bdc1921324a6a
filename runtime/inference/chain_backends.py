"""Open the backends that run a bundle's encoder and decoder, as chosen by :mod:`.selection`.

Usage::

    models = open_chain_backends(bundle, "auto")
    models.choice.summary()      # "onnxruntime: CPUExecutionProvider because no TensorRT engine for the encoder ..."
    models.encoder.run({"image": batch}); models.decoder.run(features)
    models = open_chain_backends(bundle, "triton", triton_url="triton:8001")
    models.decoder is None       # the Triton ensemble returns features and the map in one call
    models.close()               # every backend opened here releases its sessions, contexts or channel

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

import onnxruntime as ort

from lineguard.runtime.bundle import Bundle, CpuPrecision, Precision, RequestedBackend
from lineguard.runtime.inference.base import Backend, BackendUnavailableError, DeviceChain, RunningDevice
from lineguard.runtime.inference.cpu_precision import choose_cpu_models
from lineguard.runtime.inference.gpu_packages import installed_tensorrt_version
from lineguard.runtime.inference.ort_backend import (
    OnnxRuntimeBackend,
    OrtBoundChain,
    on_gpu,
    select_providers,
)
from lineguard.runtime.inference.ort_threading import OrtThreading
from lineguard.runtime.inference.selection import (
    PRECISION_ORDER,
    BackendChoice,
    choose_backend,
    onnxruntime_provider_options,
    probe_device,
    usable_onnxruntime_providers,
)

log = logging.getLogger(__name__)


@dataclass
class ChainBackends:
    """The opened backends of one chain, with the choice that opened them; owns them (:meth:`close`)."""

    choice: BackendChoice
    encoder: Backend
    decoder: Backend | None  # None: ``encoder`` runs the whole chain (Triton ensemble)
    device_chain: DeviceChain | None = None  # features stay on the GPU (None on CPU and Triton)

    def close(self) -> None:
        """Close the decoder, then the encoder (a device chain runs on them and holds nothing more)."""
        try:
            if self.decoder is not None:
                self.decoder.close()
        finally:
            self.encoder.close()


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
    passed its check on every product served (lineguard.runtime.inference.cpu_precision); else FP32, with why."""
    manifest = bundle.manifest
    if providers is not None and requested == "auto":
        requested = "onnxruntime"  # explicit ONNX Runtime providers mean ONNX Runtime
    device = device or _describe_device(requested, bundle)
    choice = choose_backend(requested, manifest, device, triton_url, precision_order=precisions)
    if choice.backend == "tensorrt":
        try:
            return _open_tensorrt(bundle, choice, device)
        except (RuntimeError, ImportError, OSError, ValueError) as exc:  # TensorRTError, CudaError, TensorRT's own
            if requested == "tensorrt":
                raise BackendUnavailableError(f"TensorRT engines do not load here: {exc}") from exc
            choice = BackendChoice(backend="onnxruntime", providers=select_providers(),
                                   reasons=[f"TensorRT engines matched but did not load: {exc}"])
    if choice.backend == "triton":
        from lineguard.runtime.inference.triton_backend import TritonBackend, TritonError, default_model_name

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
        if on_gpu(names):
            cpu_reasons = [f"{cpu_precision} graphs are checked for the CPU provider: FP32 on the GPU"]
        else:
            files, cpu_reasons = choose_cpu_models(bundle, cpu_precision, products)
    precision = {m: cpu_precision if files[m] != fp32 else "fp32"
                 for m, fp32 in (("encoder", manifest.encoder.file), ("decoder", manifest.decoder.file))}
    encoder = OnnxRuntimeBackend(bundle.path(files["encoder"]), configured, threads, precision["encoder"])
    try:
        decoder = OnnxRuntimeBackend(bundle.path(files["decoder"]), configured, threads, precision["decoder"])
    except BaseException:
        encoder.close()
        raise
    running = encoder.describe().providers
    choice = choice.model_copy(update={"providers": running, "reasons": [*choice.reasons, *cpu_reasons]})
    (log.warning if manifest.engines and requested == "auto" else log.info)("backend %s", choice.summary())
    both_on_gpu = on_gpu(running) and on_gpu(decoder.describe().providers)
    return ChainBackends(choice, encoder, decoder, OrtBoundChain(encoder, decoder, "cuda") if both_on_gpu else None)


def _open_tensorrt(bundle: Bundle, choice: BackendChoice, device: RunningDevice) -> ChainBackends:
    """Both engines with their first context, stream and buffers, made now so that a failure falls back
    before the first frame; whatever was opened is closed again when the other fails."""
    from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend, TensorRTChain, TensorRTError

    gpu_name = device.gpu.name if device.gpu is not None else "cuda"
    enc, dec = choice.engines["encoder"], choice.engines["decoder"]
    encoder = TensorRTBackend(bundle.path(enc.file), enc.precision, gpu_name)
    try:
        decoder = TensorRTBackend(bundle.path(dec.file), dec.precision, gpu_name)
    except BaseException:
        encoder.close()  # its GPU buffers, streams and contexts are not needed by the fallback
        raise
    try:
        fused: DeviceChain | None = TensorRTChain(encoder, decoder)
    except TensorRTError as exc:
        log.warning("TensorRT encoder and decoder cannot share buffers (%s): features go through the host", exc)
        fused = None
    log.info("backend %s", choice.summary())
    return ChainBackends(choice, encoder, decoder, fused)
