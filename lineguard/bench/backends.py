"""``lineguard bench vision --backend tensorrt``: one backend's chain against ONNX Runtime's, same run.

Usage::

    result = bench_backends("bundles/default", "tensorrt", batch_sizes=(1, 8))
    result.runs[0].speedup           # TensorRT frames/s over ONNX Runtime (CUDA EP on a GPU) frames/s

Both chains run preprocess + encoder + decoder on the same generated frames in interleaved rounds
(lineguard.bench.rounds: the order alternating, ``per_round`` batches each), so that machine
noise hits both alike; every figure is the median over the rounds with its min-max, the speed-up
per round too. The reference is ONNX Runtime with the best provider
this install has (on a GPU machine with onnxruntime-gpu: the CUDA EP, or the TensorRT EP). Needs no
PyTorch, unlike the ONNX Runtime vs PyTorch comparison of ``export/bench_vision.py``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from pydantic import BaseModel

from lineguard.bench.line import bench_frames
from lineguard.bench.rounds import Spread, interleaved_rounds, ratio_spread
from lineguard.runtime.bundle import Bundle, RequestedBackend
from lineguard.runtime.inference.chain import VisionChain


class BackendTiming(BaseModel):
    """Timed rounds of one backend at one batch size (also used by ``lineguard bench vision``):
    the median round's figures, and the spread of ms/frame over the rounds."""

    backend: str
    ms_per_frame: float
    frames_per_s: float
    ms_per_batch_p50: float
    ms_per_frame_spread: Spread | None = None

    @classmethod
    def from_rounds(cls, backend: str, ms_per_frame: Sequence[float], batch: int) -> BackendTiming:
        """From each round's ms/frame."""
        spread = Spread.of(ms_per_frame)
        return cls(backend=backend, ms_per_frame=spread.median, frames_per_s=1e3 / spread.median,
                   ms_per_batch_p50=spread.median * batch, ms_per_frame_spread=spread)


def timed_ms_per_frame(work: Callable[[], object], calls: int, batch: int) -> float:
    """Run ``work`` ``calls`` times; ms per frame."""
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - start) * 1e3 / (calls * batch)


class BackendRun(BaseModel):
    batch_size: int
    candidate: BackendTiming
    reference: BackendTiming
    speedup: float  # median over rounds of reference ms / candidate ms
    speedup_spread: Spread | None = None
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
                   rounds: int = 7, warmup: int = 1, triton_url: str | None = None, per_round: int = 4) -> BackendBench:
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
        per_round_ms = interleaved_rounds(
            {name: (lambda chain=chain, pixels=pixels, batch=batch: timed_ms_per_frame(
                lambda: chain.run(pixels), per_round, batch)) for name, chain in chains.items()},
            rounds=rounds, warmup=warmup)
        diff = float(np.abs(candidate.run(pixels).decoder_map - reference.run(pixels).decoder_map).max())
        timings = {name: BackendTiming.from_rounds(names[name], ms, batch) for name, ms in per_round_ms.items()}
        speedup = ratio_spread(per_round_ms["reference"], per_round_ms["candidate"])
        runs.append(BackendRun(batch_size=batch, candidate=timings["candidate"], reference=timings["reference"],
                               speedup=speedup.median, speedup_spread=speedup, max_abs_diff_map=diff))
    versions = {"onnxruntime": onnxruntime.__version__}
    if candidate.backend.backend == "tensorrt":
        versions["tensorrt"] = next(iter(candidate.backend.engines.values())).tensorrt_version
    return BackendBench(bundle_id=bundle.manifest.bundle_id, candidate=names["candidate"], reference=names["reference"],
                        selection=candidate.backend.summary(),
                        machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
                        versions=versions, runs=runs)
