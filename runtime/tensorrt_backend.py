"""TensorRT engines behind the same ``run(inputs) -> outputs`` as OnnxRuntimeBackend (no torch).

Usage::

    backend = TensorRTBackend(bundle.path("engines/orin-sm87-trt10.3.0/encoder.fp16.plan"))
    outputs = backend.run({"image": batch})          # dict name -> np.ndarray, batch of any size
    backend.max_batch                                 # from the engine's optimisation profile

Layers, as in llama-cpp-python: ``cuda_runtime`` owns streams and memory; an :class:`ExecutionSlot`
owns one execution context with its own stream and its pinned host and device buffers, sized for the
profile's maximum shapes and allocated once; :class:`TensorRTBackend` hands slots to the calling
threads. An engine built with N identical optimisation profiles (``export trt --profiles N``) gives
N slots: each inference worker of the line service runs on its own context and stream, since a
profile may serve only one context at a time. A batch larger than the profile allows is run in chunks.

Copies are asynchronous on the slot's stream (host to device, ``execute_async_v3``, device to host),
with one synchronisation per batch. ``tensorrt`` and ``cuda-python`` are imported here only.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.runtime.cuda_runtime import DeviceBuffer, PinnedBuffer, Stream

log = logging.getLogger(__name__)


class TensorRTError(RuntimeError):
    """An engine cannot be loaded or run here (wrong TensorRT version, GPU, corrupt plan, ...)."""


class TensorRTUnavailableError(TensorRTError):
    """The ``tensorrt`` Python package is not importable on this machine."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or TensorRTUnavailableError saying how to get it."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not importable here ({exc}); on x86 install the gpu extra "
            "(pip install 'lineguard[gpu]'), on Jetson use the JetPack image's TensorRT (deploy/Dockerfile.jetson)"
        ) from exc
    return tensorrt


class ExecutionSlot:
    """One execution context bound to one optimisation profile, with its stream and I/O buffers."""

    def __init__(self, trt: Any, engine: Any, profile: int, input_names: list[str], output_names: list[str]) -> None:
        self.stream = Stream()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TensorRTError("could not create a TensorRT execution context (out of GPU memory?)")
        if not self.context.set_optimization_profile_async(profile, self.stream.address):
            raise TensorRTError(f"could not select optimisation profile {profile}")
        self.input_names = input_names
        self.output_names = output_names
        max_shapes: dict[str, tuple[int, ...]] = {}
        for name in input_names:
            _, _, max_shape = engine.get_tensor_profile_shape(name, profile)
            max_shapes[name] = tuple(max_shape)
            self.context.set_input_shape(name, max_shape)
        for name in output_names:
            max_shapes[name] = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in max_shapes[name]):
                raise TensorRTError(f"output {name} has a data-dependent shape {max_shapes[name]}; not supported")
        self.host: dict[str, PinnedBuffer] = {}
        self.device: dict[str, DeviceBuffer] = {}
        for name, shape in max_shapes.items():
            self.host[name] = PinnedBuffer(shape, trt.nptype(engine.get_tensor_dtype(name)))
            self.device[name] = DeviceBuffer(self.host[name].nbytes)
            if not self.context.set_tensor_address(name, self.device[name].pointer):
                raise TensorRTError(f"could not bind tensor {name}")
        self.max_batch = max_shapes[input_names[0]][0]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self.input_names:
            array = inputs[name]
            if not self.context.set_input_shape(name, array.shape):
                raise TensorRTError(f"input {name} of shape {array.shape} is outside the engine's profile")
            staged = self.host[name].view(array.shape)
            np.copyto(staged, array, casting="same_kind")
            self.device[name].copy_from_host_async(self.host[name], self.stream, staged.nbytes)
        shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self.output_names}
        if not self.context.execute_async_v3(self.stream.address):
            raise TensorRTError("execute_async_v3 failed (see the TensorRT log)")
        for name in self.output_names:
            nbytes = int(np.prod(shapes[name])) * self.host[name].dtype.itemsize
            self.device[name].copy_to_host_async(self.host[name], self.stream, nbytes)
        self.stream.synchronize()
        # copies: the pinned buffers are reused by the next batch
        return {name: self.host[name].view(shapes[name]).copy() for name in self.output_names}

    def close(self) -> None:
        for buffer in [*self.host.values(), *self.device.values()]:
            buffer.close()
        self.stream.close()


class TensorRTBackend:
    """One serialized TensorRT engine (``.plan``), run from any number of threads."""

    def __init__(self, engine_path: Path) -> None:
        trt = import_tensorrt()
        self._trt = trt
        self.path = Path(engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise TensorRTError(f"{self.path.name} does not deserialize with TensorRT {trt.__version__} on this GPU "
                                "(built for another version or device?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.profiles = int(self.engine.num_optimization_profiles)
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_names[0], 0)[2][0])
        self._free: queue.Queue[ExecutionSlot] = queue.Queue()
        self._slots: list[ExecutionSlot] = []
        self._creating = threading.Lock()
        self.providers = [f"TensorRT {trt.__version__}"]
        log.info("loaded %s: inputs %s, outputs %s, max batch %d, %d profile(s)", self.path.name,
                 self.input_names, self.output_names, self.max_batch, self.profiles)

    def _acquire(self) -> ExecutionSlot:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._creating:
            if len(self._slots) < self.profiles:
                slot = ExecutionSlot(self._trt, self.engine, len(self._slots), self.input_names, self.output_names)
                self._slots.append(slot)
                return slot
        return self._free.get()  # every profile is busy: wait for a worker to finish its batch

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise TensorRTError(f"missing inputs {sorted(missing)} for {self.path.name}")
        batch = len(next(iter(inputs.values())))
        slot = self._acquire()
        try:
            parts = [slot.run({n: np.ascontiguousarray(inputs[n][i : i + self.max_batch]) for n in self.input_names})
                     for i in range(0, batch, self.max_batch)]
        finally:
            self._free.put(slot)
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def close(self) -> None:
        for slot in self._slots:
            slot.close()
        self._slots.clear()
