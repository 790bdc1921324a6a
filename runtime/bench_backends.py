"""``lineguard bench vision --backend tensorrt``: one backend's chain against ONNX Runtime's, same run.

Usage::

    result = bench_backends("bundles/default", "tensorrt", batch_sizes=(1, 8))
    result.runs[0].speedup           # TensorRT frames/s over ONNX Runtime (CUDA EP on a GPU) frames/s

Both chains run preprocess + encoder + decoder on the same generated frames, interleaved round by
round so that machine noise hits both alike; the reference is ONNX Runtime with the best provider
this install has (on a GPU machine with onnxruntime-gpu: the CUDA EP, or the TensorRT EP). Needs no
PyTorch, unlike the ONNX Runtime vs PyTorch comparison of ``export/bench_vision.py``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from pydantic import BaseModel

from lineguard.runtime.backend_selection import RequestedBackend
from lineguard.runtime.bench_line import bench_frames
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.chain import VisionChain


class BackendTiming(BaseModel):
    """Timed rounds of one backend at one batch size (also used by ``lineguard bench vision``)."""

    backend: str
    ms_per_frame: float
    frames_per_s: float
    ms_per_batch_p50: float

    @classmethod
    def from_rounds(cls, backend: str, seconds: list[float], batch: int) -> BackendTiming:
        total = sum(seconds)
        frames = batch * len(seconds)
        return cls(backend=backend, ms_per_frame=total * 1e3 / frames, frames_per_s=frames / total,
                   ms_per_batch_p50=float(np.median(seconds) * 1e3))


class BackendRun(BaseModel):
    batch_size: int
    candidate: BackendTiming
    reference: BackendTiming
    speedup: float
    max_abs_diff_map: float


class BackendBench(BaseModel):
    bundle_id: str
    candidate: str
    reference: str
    selection: str
    machine: str
    versions: dict[str, str]
    runs: list[BackendRun]


def bench_backends(bundle_dir: str | Path, backend: RequestedBackend, batch_sizes: Sequence[int] = (1, 8),
                   rounds: int = 30, warmup: int = 3, triton_url: str | None = None) -> BackendBench:
    bundle = Bundle.open(bundle_dir)
    candidate = VisionChain(bundle, backend=backend, triton_url=triton_url)
    reference = VisionChain(bundle, backend="onnxruntime")
    frames = bench_frames(max(batch_sizes))
    names = {"candidate": f"{candidate.backend.backend}: {', '.join(candidate.providers)}",
             "reference": f"onnxruntime: {', '.join(reference.providers)}"}
    runs = []
    for batch in batch_sizes:
        pixels = candidate.preprocessor(frames[:batch])
        chains = {"candidate": candidate, "reference": reference}
        for _ in range(warmup):
            for chain in chains.values():
                chain.run(pixels)
        seconds: dict[str, list[float]] = {name: [] for name in chains}
        for _ in range(rounds):
            for name, chain in chains.items():
                start = time.perf_counter()
                chain.run(pixels)
                seconds[name].append(time.perf_counter() - start)
        diff = float(np.abs(candidate.run(pixels).decoder_map - reference.run(pixels).decoder_map).max())
        timings = {name: BackendTiming.from_rounds(names[name], s, batch) for name, s in seconds.items()}
        runs.append(BackendRun(batch_size=batch, candidate=timings["candidate"], reference=timings["reference"],
                               speedup=timings["candidate"].frames_per_s / timings["reference"].frames_per_s,
                               max_abs_diff_map=diff))
    versions = {"onnxruntime": onnxruntime.__version__}
    if candidate.backend.backend == "tensorrt":
        versions["tensorrt"] = next(iter(candidate.backend.engines.values())).tensorrt_version
    return BackendBench(bundle_id=bundle.manifest.bundle_id, candidate=names["candidate"], reference=names["reference"],
                        selection=candidate.backend.summary(),
                        machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
                        versions=versions, runs=runs)
