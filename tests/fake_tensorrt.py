"""A stand-in for ``tensorrt`` and cuda-python's memory, so that the TensorRT backend's plumbing (slots,
profiles, tensor addresses, copies) runs on a machine without a GPU.

Device memory is a dict of numpy byte arrays keyed by fake pointers; every copy is recorded. A fake
engine reads its inputs from whatever addresses its context has bound and writes its outputs to the
bound output addresses, as a real engine does, so binding one engine's input to another's output
buffer is observable. Two tiny models: an "encoder" (image -> s1, s2) and a "decoder" (s1, s2 -> prob).
"""

from __future__ import annotations

import itertools
import json
import types
from typing import Any

import numpy as np


class FakeDevice:
    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.copies: list[tuple[str, int]] = []  # ("h2d" | "d2h", nbytes)
        self._next = itertools.count(0x10000, 0x10000)

    def alloc(self, nbytes: int) -> int:
        pointer = next(self._next)
        self.memory[pointer] = np.zeros(max(nbytes, 1), np.uint8)
        return pointer

    def read(self, pointer: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        count = int(np.prod(shape))
        return self.memory[pointer].view(dtype)[:count].reshape(shape).copy()

    def write(self, pointer: int, array: np.ndarray) -> None:
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self.memory[pointer][: raw.size] = raw


DEVICE = FakeDevice()


class Stream:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.handle = next(self._ids)

    @property
    def address(self) -> int:
        return self.handle

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self.handle = None


class PinnedBuffer:
    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.pointer = DEVICE.alloc(self.nbytes)
        self.array = DEVICE.memory[self.pointer][: self.nbytes].view(self.dtype).reshape(self.shape)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.array.reshape(-1)[: int(np.prod(shape))].reshape(shape)

    def close(self) -> None:
        self.pointer = 0


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.pointer = DEVICE.alloc(self.nbytes)

    def copy_from_host_async(self, host: PinnedBuffer, stream: Stream, nbytes: int | None = None) -> None:
        count = host.nbytes if nbytes is None else nbytes
        DEVICE.memory[self.pointer][:count] = DEVICE.memory[host.pointer][:count]
        DEVICE.copies.append(("h2d", count))

    def copy_to_host_async(self, host: PinnedBuffer, stream: Stream, nbytes: int | None = None) -> None:
        count = host.nbytes if nbytes is None else nbytes
        DEVICE.memory[host.pointer][:count] = DEVICE.memory[self.pointer][:count]
        DEVICE.copies.append(("d2h", count))

    def close(self) -> None:
        self.pointer = 0


# -- the models: per-sample shapes and what they compute ---------------------------------------------

MODELS: dict[str, dict[str, Any]] = {
    "encoder": {"inputs": {"image": (3, 8, 8)}, "outputs": {"s1": (2, 4, 4), "s2": (3, 2, 2)}},
    "decoder": {"inputs": {"s1": (2, 4, 4), "s2": (3, 2, 2)}, "outputs": {"prob": (1, 8, 8)}},
}


def compute(model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if model == "encoder":
        image = inputs["image"]
        return {"s1": image[:, :2, ::2, ::2] * 2.0, "s2": image[:, :, ::4, ::4] + 1.0}
    s1, s2 = inputs["s1"], inputs["s2"]
    level = s1.mean(axis=(1, 2, 3)) - s2.mean(axis=(1, 2, 3))
    up = np.repeat(np.repeat(s1[:, :1], 2, axis=2), 2, axis=3)
    return {"prob": (up + level[:, None, None, None]).astype(np.float32)}


def plan_bytes(model: str, max_batch: int = 4, profiles: int = 1, fail: str | None = None) -> bytes:
    """What the fake Runtime deserializes; ``fail``: "profile" (selection raises), "context" (None)."""
    return json.dumps({"model": model, "max_batch": max_batch, "profiles": profiles, "fail": fail}).encode()


class TensorIOMode:
    INPUT = "input"
    OUTPUT = "output"


class Logger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        if self.engine.fail == "profile":  # what TensorRT's binding does: raise, never return False
            raise RuntimeError("Error Code 3: API Usage Error (profile is already in use)")
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        if not 1 <= shape[0] <= self.engine.max_batch:
            return False
        self.shapes[name] = shape
        return True

    def _batch(self) -> int:
        return next(iter(self.shapes.values()))[0] if self.shapes else self.engine.max_batch

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        spec = self.engine.spec
        per_sample = spec["inputs"].get(name) or spec["outputs"][name]
        return (self._batch(), *per_sample)

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream: int) -> bool:
        inputs = {n: DEVICE.read(self.addresses[n], self.get_tensor_shape(n)) for n in self.engine.spec["inputs"]}
        for name, array in compute(self.engine.model, inputs).items():
            DEVICE.write(self.addresses[name], array.astype(np.float32))
        return True


class FakeEngine:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.model = raw["model"]
        self.max_batch = raw["max_batch"]
        self.num_optimization_profiles = raw["profiles"]
        self.fail = raw["fail"]
        self.spec = MODELS[self.model]
        self.names = [*self.spec["inputs"], *self.spec["outputs"]]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name in self.spec["inputs"] else TensorIOMode.OUTPUT

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        rest = self.spec["inputs"][name]
        return (1, *rest), (self.max_batch, *rest), (self.max_batch, *rest)

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def create_execution_context(self) -> FakeContext | None:
        return None if self.fail == "context" else FakeContext(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        try:
            return FakeEngine(json.loads(data))
        except ValueError:
            return None


def fake_tensorrt_module() -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.3.0"  # type: ignore[attr-defined]
    module.Logger = Logger  # type: ignore[attr-defined]
    module.Runtime = Runtime  # type: ignore[attr-defined]
    module.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
    module.nptype = lambda dtype: np.float32  # type: ignore[attr-defined]
    return module


def install(monkeypatch: Any) -> FakeDevice:
    """Put the fakes in place of ``tensorrt`` and of the backend's CUDA wrappers; returns the device."""
    import sys

    from lineguard.runtime.inference import tensorrt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt_module())
    for name, fake in (("Stream", Stream), ("PinnedBuffer", PinnedBuffer), ("DeviceBuffer", DeviceBuffer)):
        monkeypatch.setattr(tensorrt_backend, name, fake)
    DEVICE.copies.clear()
    return DEVICE
