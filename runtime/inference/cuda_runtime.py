"""Thin owning wrappers over the CUDA runtime API of ``cuda-python``: device facts, streams, memory.

Usage::

    from lineguard.runtime.inference.cuda_runtime import DeviceBuffer, PinnedBuffer, Stream, describe_gpu
    describe_gpu()                                  # GpuInfo(name='Orin', compute_capability='8.7', ...)
    stream = Stream()
    host = PinnedBuffer((8, 3, 224, 224), np.float32)   # page-locked: async copies really are async
    device = DeviceBuffer(host.nbytes)
    host.array[:] = batch
    device.copy_from_host_async(host, stream)
    stream.synchronize()

Each wrapper frees what it allocated (``close()``, or when collected). ``cuda-python`` is imported
on first use only, so CPU installs never need it; it exposes the runtime API as
``cuda.bindings.runtime`` (12.6 and later) or ``cuda.cudart`` (earlier), and every call returns
``(error, *values)``, which :func:`check` turns into a :class:`CudaError`.

Versions: cuda-python links its own static CUDA runtime, so its ``cudaRuntimeGetVersion`` names the
wheel (12.9 for ``cuda-python 12.9``), not the CUDA that TensorRT and ONNX Runtime load. What engines
are recorded with is the system's: :func:`system_cudart_version` asks the system ``libcudart.so``
through ctypes, :func:`driver_cuda_version` the driver (the newest CUDA it supports).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

from lineguard.runtime.inference.base import GpuInfo


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and CUDA's error name."""


@cache
def cudart() -> Any:
    """The CUDA runtime bindings module of cuda-python (ImportError where it is not installed)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


def check(result: tuple[Any, ...], call: str) -> Any:
    """Unpack ``(err, *values)``: raise on an error, else return the one value (or the tuple, or None)."""
    rt = cudart()
    err, values = result[0], result[1:]
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        raise CudaError(f"{call} failed: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _version(code: int) -> str:
    """CUDA encodes versions as 1000 * major + 10 * minor (12040 -> "12.4")."""
    return f"{code // 1000}.{(code % 1000) // 10}"


# Where the system's CUDA runtime is found: the loader's path first (ldconfig, LD_LIBRARY_PATH), then
# the toolkit's default prefix (JetPack and NGC images keep it there).
SYSTEM_CUDART = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                 "/usr/local/cuda/lib64/libcudart.so", "/usr/local/cuda/targets/aarch64-linux/lib/libcudart.so")


def system_cudart_version(loader: Callable[[str], Any] = ctypes.CDLL, names: Sequence[str] = SYSTEM_CUDART) -> str | None:
    """The version of the system's CUDA runtime library (what TensorRT and ONNX Runtime run on), or
    None where none loads. Not cuda-python's: that one is linked into the wheel."""
    for name in names:
        try:
            lib = loader(name)
        except OSError:
            continue
        code = ctypes.c_int(0)
        if lib.cudaRuntimeGetVersion(ctypes.byref(code)) == 0 and code.value > 0:
            return _version(code.value)
    return None


def driver_cuda_version() -> str:
    """The newest CUDA version the installed driver supports (cudaDriverGetVersion)."""
    return _version(int(check(cudart().cudaDriverGetVersion(), "cudaDriverGetVersion")))


def system_cuda_version() -> str:
    """The CUDA version engines are built against here: the system runtime's, else the driver's."""
    return system_cudart_version() or driver_cuda_version()


def describe_gpu(device: int = 0) -> GpuInfo:
    """Name, compute capability and system CUDA versions of one GPU; CudaError where there is none."""
    rt = cudart()
    count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count <= device:
        raise CudaError(f"no CUDA device {device} ({count} present)")
    props = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    driver = driver_cuda_version()
    return GpuInfo(name=name.rstrip("\x00").strip(), compute_capability=f"{props.major}.{props.minor}",
                   cuda_runtime_version=system_cudart_version() or driver, cuda_driver_version=driver)


class Stream:
    """A non-blocking CUDA stream: work on it does not serialise with other workers' streams."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def address(self) -> int:
        """The raw cudaStream_t, as TensorRT's ``execute_async_v3(stream_handle)`` takes it."""
        return int(self.handle)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if getattr(self, "handle", None) is not None:
            check(cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the driver may be gone already
            self.close()


class PinnedBuffer:
    """Page-locked host memory viewed as a numpy array of a fixed (maximum) shape."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.pointer = int(check(cudart().cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_ubyte * self.nbytes).from_address(self.pointer)
        self.array = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The leading part of the buffer as an array of ``shape`` (a smaller batch)."""
        count = int(np.prod(shape))
        return self.array.reshape(-1)[:count].reshape(shape)

    def close(self) -> None:
        if getattr(self, "pointer", 0):
            self.array = None  # type: ignore[assignment]
            check(cudart().cudaFreeHost(self.pointer), "cudaFreeHost")
            self.pointer = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class DeviceBuffer:
    """Device memory of a fixed size, with async copies to and from pinned host buffers."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.pointer = int(check(cudart().cudaMalloc(self.nbytes), "cudaMalloc"))

    def copy_from_host_async(self, host: PinnedBuffer, stream: Stream, nbytes: int | None = None) -> None:
        rt = cudart()
        count = host.nbytes if nbytes is None else nbytes
        check(rt.cudaMemcpyAsync(self.pointer, host.pointer, count, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                 stream.handle), "cudaMemcpyAsync(host to device)")

    def copy_to_host_async(self, host: PinnedBuffer, stream: Stream, nbytes: int | None = None) -> None:
        rt = cudart()
        count = host.nbytes if nbytes is None else nbytes
        check(rt.cudaMemcpyAsync(host.pointer, self.pointer, count, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                 stream.handle), "cudaMemcpyAsync(device to host)")

    def close(self) -> None:
        if getattr(self, "pointer", 0):
            check(cudart().cudaFree(self.pointer), "cudaFree")
            self.pointer = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
