"""TensorRT engines behind the :class:`~lineguard.runtime.inference.base.Backend` protocol (no torch).

Usage::

    backend = TensorRTBackend(bundle.path("engines/orin-sm87-trt10.3.0/encoder.fp16.plan"), precision="fp16")
    outputs = backend.run({"image": batch})          # dict name -> np.ndarray, batch of any size
    backend.max_batch                                 # from the engine's optimisation profile
    backend.describe().summary()                      # "tensorrt encoder.fp16.plan (fp16, max batch 8, ...) ..."
    backend.close()                                   # contexts, streams and buffers freed

Layers, as in llama-cpp-python: ``cuda_runtime`` owns streams and memory; an :class:`ExecutionSlot`
owns one execution context with its own stream and its pinned host and device buffers, sized for the
profile's maximum shapes and allocated once; :class:`TensorRTBackend` hands slots to the calling
threads. An engine built with N identical optimisation profiles (``export trt --profiles N``) gives
N slots: each inference worker of the line service runs on its own context and stream, since a
profile may serve only one context at a time. A batch larger than the profile allows is run in chunks
(:func:`~lineguard.runtime.inference.base.run_in_chunks`).

Copies are asynchronous on the slot's stream (host to device, ``execute_async_v3``, device to host),
with one synchronisation per batch. :class:`TensorRTChain` runs the encoder and the decoder back to
back with the decoder's inputs bound to the encoder's output buffers: the features never leave the
GPU; only the image goes up and only the map (and the stages the caller asks for) come back.

The first slot (context, stream, buffers) is made when the backend is constructed, so a context or
profile that TensorRT refuses fails there (where the chain can still fall back to ONNX Runtime),
not on the first frame. ``tensorrt`` and ``cuda-python`` are imported here only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.runtime.bundle import Precision
from lineguard.runtime.inference.base import BackendClosedError, BackendDescription, run_in_chunks
from lineguard.runtime.inference.cuda_runtime import DeviceBuffer, PinnedBuffer, Stream
from lineguard.runtime.inference.gpu_packages import GPU_INSTALL_COMMAND

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
            f"TensorRT is not importable here ({exc}); on x86: {GPU_INSTALL_COMMAND} "
            "(or deploy/Dockerfile.cuda); on Jetson use the JetPack image's TensorRT (deploy/Dockerfile.jetson)"
        ) from exc
    return tensorrt


class ExecutionSlot:
    """One execution context bound to one optimisation profile, with its stream and I/O buffers."""

    def __init__(self, trt: Any, engine: Any, profile: int, input_names: list[str], output_names: list[str]) -> None:
        self.input_names = input_names
        self.output_names = output_names
        self.host: dict[str, PinnedBuffer] = {}
        self.device: dict[str, DeviceBuffer] = {}
        self.context: Any = None
        self.stream = Stream()
        try:
            self._create(trt, engine, profile)
        except BaseException:
            self.close()
            raise

    def _create(self, trt: Any, engine: Any, profile: int) -> None:
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TensorRTError("could not create a TensorRT execution context (out of GPU memory?)")
        try:  # the binding raises RuntimeError on failure (it never returns False); both are handled
            selected = self.context.set_optimization_profile_async(profile, self.stream.address)
        except RuntimeError as exc:
            raise TensorRTError(f"could not select optimisation profile {profile}: {exc}") from exc
        if selected is False:
            raise TensorRTError(f"could not select optimisation profile {profile}")
        self.stream.synchronize()  # the selection is queued on this stream; a chain may run on another
        max_shapes: dict[str, tuple[int, ...]] = {}
        for name in self.input_names:
            _, _, max_shape = engine.get_tensor_profile_shape(name, profile)
            max_shapes[name] = tuple(max_shape)
            self.context.set_input_shape(name, max_shape)
        for name in self.output_names:
            max_shapes[name] = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in max_shapes[name]):
                raise TensorRTError(f"output {name} has a data-dependent shape {max_shapes[name]}; not supported")
        for name, shape in max_shapes.items():
            self.host[name] = PinnedBuffer(shape, trt.nptype(engine.get_tensor_dtype(name)))
            self.device[name] = DeviceBuffer(self.host[name].nbytes)
            self._bind(name, self.device[name].pointer)
        self.max_batch = max_shapes[self.input_names[0]][0]

    def _bind(self, name: str, pointer: int) -> None:
        if not self.context.set_tensor_address(name, pointer):
            raise TensorRTError(f"could not bind tensor {name}")

    def _shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            raise TensorRTError(f"input {name} of shape {shape} is outside the engine's profile")

    def stage_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        """Host arrays into this slot's own input buffers (pinned, then asynchronously to the device)."""
        for name in self.input_names:
            array = inputs[name]
            self._shape(name, array.shape)
            self._bind(name, self.device[name].pointer)  # a chain may have pointed it elsewhere
            staged = self.host[name].view(array.shape)
            np.copyto(staged, array, casting="same_kind")
            self.device[name].copy_from_host_async(self.host[name], self.stream, staged.nbytes)

    def bind_device_input(self, name: str, pointer: int, shape: tuple[int, ...]) -> None:
        """Read input ``name`` from device memory someone else owns (another engine's output buffer)."""
        self._shape(name, shape)
        self._bind(name, pointer)

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(self.context.get_tensor_shape(name)) for name in self.output_names}

    def execute(self, stream: Stream | None = None) -> None:
        if not self.context.execute_async_v3((stream or self.stream).address):
            raise TensorRTError("execute_async_v3 failed (see the TensorRT log)")

    def fetch_async(self, names: Sequence[str], shapes: dict[str, tuple[int, ...]], stream: Stream | None = None) -> None:
        """Queue device-to-host copies of these outputs (read them after the stream synchronised)."""
        for name in names:
            nbytes = int(np.prod(shapes[name])) * self.host[name].dtype.itemsize
            self.device[name].copy_to_host_async(self.host[name], stream or self.stream, nbytes)

    def read(self, names: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        # copies: the pinned buffers are reused by the next batch
        return {name: self.host[name].view(shapes[name]).copy() for name in names}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.stage_inputs(inputs)
        shapes = self.output_shapes()
        self.execute()
        self.fetch_async(self.output_names, shapes)
        self.stream.synchronize()
        return self.read(self.output_names, shapes)

    def close(self) -> None:
        """Wait for the work queued on the stream, then free the context, the buffers and the stream.
        TensorRT 10's Python API has no ``destroy()``: an execution context is freed with its last
        reference, and must go before the engine that made it."""
        try:
            if self.stream.handle is not None:
                self.stream.synchronize()  # no copy or kernel may still use the memory freed below
        finally:
            self.context = None
            for buffer in [*self.host.values(), *self.device.values()]:
                buffer.close()
            self.host.clear()
            self.device.clear()
            self.stream.close()


class TensorRTBackend:
    """One serialized TensorRT engine (``.plan``), run from any number of threads."""

    def __init__(self, engine_path: Path, precision: Precision | None = None, device: str = "cuda") -> None:
        """``precision``: the engine's (its record in the manifest says; a plan does not), for
        :meth:`describe`; ``device``: what to call the GPU there (the name :func:`probe_device` read)."""
        trt = import_tensorrt()
        self._trt = trt
        self.path = Path(engine_path)
        self.precision = precision
        self.device_name = device
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
        try:
            self._free.put(self._new_slot())  # fails here, at selection time, where ONNX Runtime can take over
        except BaseException:
            self.close()
            raise
        log.info("loaded %s: inputs %s, outputs %s, max batch %d, %d profile(s)", self.path.name,
                 self.input_names, self.output_names, self.max_batch, self.profiles)

    def _new_slot(self) -> ExecutionSlot:
        if self.engine is None:
            raise BackendClosedError(f"{self.path.name}: the TensorRT engine was closed")
        slot = ExecutionSlot(self._trt, self.engine, len(self._slots), self.input_names, self.output_names)
        self._slots.append(slot)
        return slot

    def tensor_dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

    def acquire(self) -> ExecutionSlot:
        """A slot no other thread uses; give it back with :meth:`release`."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._creating:
            if len(self._slots) < self.profiles:
                try:
                    return self._new_slot()
                except TensorRTError as exc:  # e.g. out of GPU memory: serve with the slots there are
                    log.warning("%s: no slot for profile %d (%s); running on %d", self.path.name, len(self._slots),
                                exc, len(self._slots))
                    self.profiles = len(self._slots)
        return self._free.get()  # every profile is busy: wait for a worker to finish its batch

    def release(self, slot: ExecutionSlot) -> None:
        self._free.put(slot)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise TensorRTError(f"missing inputs {sorted(missing)} for {self.path.name}")
        slot = self.acquire()
        try:
            return run_in_chunks(slot.run, {n: inputs[n] for n in self.input_names}, self.max_batch)
        finally:
            self.release(slot)

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="tensorrt", model=self.path.name, providers=list(self.providers),
                                  device=self.device_name, precision=self.precision, max_batch=self.max_batch,
                                  profiles=self.profiles)

    def close(self) -> None:
        """Free every slot's context, stream and buffers, then the engine and the runtime (in the
        reverse order of their creation, as TensorRT requires). No thread may be running on it."""
        failures: list[Exception] = []
        with self._creating:
            for slot in self._slots:
                try:
                    slot.close()
                except Exception as exc:  # CudaError from a lost device: the other slots are still freed
                    failures.append(exc)
            self._slots.clear()
            self._free = queue.Queue()
            self.engine = None
            self._runtime = None
        if failures:
            raise failures[0]


class TensorRTChain:
    """Encoder and decoder engines back to back on one stream, the decoder's inputs bound to the
    encoder's output buffers: the features stay on the GPU. Only the outputs named in ``host_outputs``
    (the anomaly map, and the stages few-shot scoring reads on the CPU) are copied back."""

    def __init__(self, encoder: TensorRTBackend, decoder: TensorRTBackend) -> None:
        missing = [n for n in decoder.input_names if n not in encoder.output_names]
        if missing:
            raise TensorRTError(f"decoder inputs {missing} are not encoder outputs")
        for name in decoder.input_names:
            if encoder.tensor_dtype(name) != decoder.tensor_dtype(name):
                raise TensorRTError(f"{name}: encoder writes {encoder.tensor_dtype(name)}, decoder reads "
                                    f"{decoder.tensor_dtype(name)}")
        self.encoder, self.decoder = encoder, decoder
        self.max_batch = min(encoder.max_batch, decoder.max_batch)

    def run(self, inputs: dict[str, np.ndarray], host_outputs: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Outputs named in ``host_outputs`` (encoder or decoder outputs) and the ms spent per model."""
        timings = {"encoder": 0.0, "decoder": 0.0}
        enc, dec = self.encoder.acquire(), self.decoder.acquire()
        try:
            outputs = run_in_chunks(lambda chunk: self._run_chunk(enc, dec, chunk, host_outputs, timings), inputs,
                                    self.max_batch)
        finally:
            self.encoder.release(enc)
            self.decoder.release(dec)
        return outputs, timings

    def _run_chunk(self, enc: ExecutionSlot, dec: ExecutionSlot, inputs: dict[str, np.ndarray],
                   host_outputs: Sequence[str], timings: dict[str, float]) -> dict[str, np.ndarray]:
        stream = enc.stream  # one stream: the decoder starts when the encoder's kernels are done
        t0 = time.perf_counter()
        enc.stage_inputs(inputs)
        enc_shapes = enc.output_shapes()
        enc.execute(stream)
        enc_back = [n for n in host_outputs if n in enc.output_names]
        enc.fetch_async(enc_back, enc_shapes, stream)
        stream.synchronize()  # for the per-model timings only: nothing is copied here
        t1 = time.perf_counter()
        for name in dec.input_names:
            dec.bind_device_input(name, enc.device[name].pointer, enc_shapes[name])
        dec_shapes = dec.output_shapes()
        dec.execute(stream)
        dec_back = [n for n in host_outputs if n in dec.output_names]
        dec.fetch_async(dec_back, dec_shapes, stream)
        stream.synchronize()
        timings["encoder"] += (t1 - t0) * 1e3
        timings["decoder"] += (time.perf_counter() - t1) * 1e3
        return {**enc.read(enc_back, enc_shapes), **dec.read(dec_back, dec_shapes)}
