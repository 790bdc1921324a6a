"""What every inference backend is, and the types the layers of ``inference`` share.

Usage::

    from lineguard.runtime.inference.base import Backend, run_in_chunks
    backend: Backend = OnnxRuntimeBackend(path)       # or TensorRTBackend(plan), TritonBackend(url, model)
    backend.run({"image": batch})                     # dict name -> np.ndarray
    backend.describe().summary()                      # "tensorrt encoder.fp16.b8.plan (fp16, max batch 8) on Orin ..."
    backend.close()                                   # sessions, contexts, buffers, channels released
    run_in_chunks(one_call, {"image": batch}, max_batch=8)   # 20 frames: 8 + 8 + 4, outputs concatenated

The bottom of the package: imports only numpy, pydantic and the bundle's names, so the raw CUDA layer
(:mod:`.cuda_runtime`) and each backend build on it without importing the selection policy. Layers,
each importing only those before it::

    base  <-  cuda_runtime, gpu_packages, ort_threading, preprocess, cpu_precision
          <-  ort_backend, tensorrt_backend, triton_backend     (one Backend each)
          <-  selection                                        (which backend, and why)
          <-  chain_backends                                   (opens the chosen ones)
          <-  chain                                            (VisionChain)

Backend and precision names are the bundle's (:mod:`lineguard.runtime.bundle.schema`): a bundle's
engine records and a line's config speak the same words as the backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, get_args, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from lineguard.runtime.bundle import BackendName, ChainModel, Precision

CHAIN_MODELS: tuple[ChainModel, ...] = get_args(ChainModel)  # ("encoder", "decoder"), in running order

Arrays = dict[str, np.ndarray]


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this bundle here; the message lists every reason."""


class BackendClosedError(RuntimeError):
    """A backend was asked to run after :meth:`Backend.close` released what it runs on."""


class GpuInfo(BaseModel):
    """One CUDA GPU as engines are recorded against it (:func:`.cuda_runtime.describe_gpu` fills it)."""

    model_config = ConfigDict(frozen=True)

    name: str
    compute_capability: str
    cuda_runtime_version: str  # the system's CUDA runtime (libcudart), not cuda-python's bundled one
    cuda_driver_version: str | None = None  # the newest CUDA the driver supports


class RunningDevice(BaseModel):
    """What this machine offers for inference. ``*_error`` says why a part is absent."""

    model_config = ConfigDict(frozen=True)

    gpu: GpuInfo | None = None
    gpu_error: str | None = None
    tensorrt_version: str | None = None
    tensorrt_error: str | None = None
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)


class BackendDescription(BaseModel):
    """What one backend is: for the logs, ``lineguard bench`` and anyone asking what runs a model."""

    model_config = ConfigDict(frozen=True)

    backend: BackendName
    model: str  # the file it loaded (ONNX graph, TensorRT plan) or the served model's name (Triton)
    providers: list[str]  # ONNX Runtime's running providers; "TensorRT 10.3.0"; "triton <url> <model>"
    device: str  # "cpu", "cuda", the GPU's name, or the Triton server's URL
    precision: Precision | None = None  # None where the backend cannot know it (a remote model)
    max_batch: int | None = None  # the most samples one call takes; None: no limit of its own
    profiles: int | None = None  # TensorRT: optimisation profiles, i.e. contexts that may run at once

    def summary(self) -> str:
        facts = [f for f in (self.precision, f"max batch {self.max_batch}" if self.max_batch else None,
                             f"{self.profiles} profile{'s' if self.profiles != 1 else ''}" if self.profiles else None)
                 if f]
        what = f" ({', '.join(facts)})" if facts else ""
        return f"{self.backend} {self.model}{what} on {self.device} via {', '.join(self.providers)}"


@runtime_checkable
class Backend(Protocol):
    """One model (or one remote ensemble) behind ``run(inputs) -> outputs``, batch-first arrays.

    ``close`` releases what the backend holds (an ONNX Runtime session; TensorRT contexts, streams and
    buffers; a gRPC channel) and may be called more than once; ``run`` afterwards raises
    :class:`BackendClosedError`. ``describe`` costs nothing and may be called any time before close."""

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def describe(self) -> BackendDescription: ...


class DeviceChain(Protocol):
    """Encoder then decoder with the features kept on the device; only ``host_outputs`` come back,
    with the ms spent per model. It runs on its encoder's and decoder's backends and owns neither."""

    def run(self, inputs: dict[str, np.ndarray],
            host_outputs: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]: ...


def batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """The batch every input has along its first axis; ValueError when there is none or they differ."""
    sizes = {name: len(array) for name, array in inputs.items()}
    if not sizes:
        raise ValueError("no inputs")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def concatenate(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per name, the parts' arrays joined along the batch axis (the names of the first part)."""
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def run_in_chunks(run: Callable[[Arrays], Arrays], inputs: Mapping[str, np.ndarray],
                  max_batch: int | None) -> dict[str, np.ndarray]:
    """``run`` on consecutive slices of at most ``max_batch`` samples, each input C-contiguous, and the
    outputs concatenated in order: a batch larger than an engine's profile or a served model's
    ``max_batch_size`` gives the same outputs as one call. ``max_batch`` None: one call, as it is
    (a model without a batch axis, or no limit)."""
    if max_batch is None:
        return run({name: np.ascontiguousarray(array) for name, array in inputs.items()})
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    batch = batch_size(inputs)
    step = min(batch, max_batch) or 1  # an empty batch: one call, the backend says what it makes of it
    return concatenate([run({name: np.ascontiguousarray(array[i : i + step]) for name, array in inputs.items()})
                        for i in range(0, max(batch, 1), step)])
