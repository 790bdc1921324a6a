"""ONNX Runtime behind the :class:`~lineguard.runtime.inference.base.Backend` protocol, and the
encoder-decoder chain that keeps the features on the device through IO binding.

Usage::

    backend = OnnxRuntimeBackend(bundle.path("encoder.onnx"))
    outputs = backend.run({"image": batch})           # dict name -> np.ndarray
    backend.describe().providers                        # e.g. ['CPUExecutionProvider'], what the session runs on
    backend.close()                                     # the session is released

ONNX Runtime takes the TensorRT EP, then the CUDA EP, then the CPU EP, whichever this install has.
The graphs have a dynamic batch axis: any batch runs in one call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lineguard.runtime.bundle import Precision
from lineguard.runtime.inference.base import BackendClosedError, BackendDescription
from lineguard.runtime.inference.ort_threading import OrtThreading, usable_cores

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # the providers that run on the GPU


def on_gpu(providers: Sequence[str | tuple[str, dict]]) -> bool:
    """Whether any of these providers (names, or (name, options) pairs) runs on the GPU."""
    return any((p[0] if isinstance(p, tuple) else p) in GPU_PROVIDERS for p in providers)


def select_providers(available: list[str] | None = None) -> list[str]:
    """The preferred providers this onnxruntime build offers, best first; CPU is always last."""
    available = ort.get_available_providers() if available is None else available
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """One ONNX model in one ONNX Runtime session."""

    def __init__(self, model_path: Path, providers: Sequence[str | tuple[str, dict]] | None = None,
                 threads: int | OrtThreading | None = None, precision: Precision = "fp32") -> None:
        """``providers``: names or (name, options) pairs, best first (None: :func:`select_providers`).
        ``threads``: an :class:`OrtThreading` (a deployment's choice), or a thread count with spinning
        off, or None for every core this process may use, spinning off. ``precision``: the graph's
        (an INT8-quantised graph says so in :meth:`describe`)."""
        if not isinstance(threads, OrtThreading):
            threads = OrtThreading(intra_op_threads=threads or len(usable_cores()))
        self.threading = threads
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads.intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning off unless asked: the scoring that follows (numpy/BLAS) and any LLM need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if threads.allow_spinning else "0")
        if threads.affinities:
            options.add_session_config_entry("session.intra_op_thread_affinities", threads.affinities)
        self.providers = list(providers or select_providers())
        self.path = Path(model_path)
        self.precision = precision
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            str(model_path), sess_options=options, providers=self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._running = self.session.get_providers()
        log.info("loaded %s on %s", self.path.name, self._running)

    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session (BackendClosedError after :meth:`close`)."""
        if self._session is None:
            raise BackendClosedError(f"{self.path.name}: the ONNX Runtime session was closed")
        return self._session

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values, strict=True))

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="onnxruntime", model=self.path.name, providers=list(self._running),
                                  device="cuda" if on_gpu(self._running) else "cpu", precision=self.precision)

    def close(self) -> None:
        """Release the session: ONNX Runtime frees its memory (and GPU allocations) with the last reference."""
        self._session = None


class OrtBoundChain:
    """Encoder then decoder through ONNX Runtime IO binding: the encoder's outputs stay as OrtValues on
    ``device`` ("cuda" with the CUDA/TensorRT EP) and are bound as the decoder's inputs; only the
    outputs named in ``host_outputs`` (the map, the stages few-shot scoring reads) are copied to host.
    With ``device="cpu"`` the same binding logic runs on the CPU EP (what the CPU tests exercise)."""

    def __init__(self, encoder: OnnxRuntimeBackend, decoder: OnnxRuntimeBackend, device: str = "cuda",
                 device_id: int = 0) -> None:
        missing = [n for n in decoder.input_names if n not in encoder.output_names]
        if missing:
            raise ValueError(f"decoder inputs {missing} are not encoder outputs")
        self.encoder, self.decoder = encoder, decoder
        self.device, self.device_id = device, device_id

    def run(self, inputs: dict[str, np.ndarray],
            host_outputs: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Outputs named in ``host_outputs`` (encoder or decoder outputs) and the ms spent per model."""
        t0 = time.perf_counter()
        encoder, decoder = self.encoder.session, self.decoder.session
        bound = encoder.io_binding()
        for name, array in inputs.items():
            bound.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.encoder.output_names:
            bound.bind_output(name, self.device, self.device_id)
        encoder.run_with_iobinding(bound)
        features = dict(zip(self.encoder.output_names, bound.get_outputs(), strict=True))
        t1 = time.perf_counter()
        chained = decoder.io_binding()
        for name in self.decoder.input_names:
            chained.bind_ortvalue_input(name, features[name])  # device memory in, no host copy
        for name in self.decoder.output_names:
            wanted = name in host_outputs
            chained.bind_output(name, "cpu" if wanted else self.device, 0 if wanted else self.device_id)
        decoder.run_with_iobinding(chained)
        results = dict(zip(self.decoder.output_names, chained.get_outputs(), strict=True))
        host = {name: value.numpy() for name, value in results.items() if name in host_outputs}
        host |= {name: value.numpy() for name, value in features.items() if name in host_outputs}
        return host, {"encoder": (t1 - t0) * 1e3, "decoder": (time.perf_counter() - t1) * 1e3}
