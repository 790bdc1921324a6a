"""Preprocessing, measured: the fused path (resize first, one table lookup per channel into the batch)
against the path it replaced (colour conversion at camera resolution, resize, four float copies).

Usage::

    from lineguard.bench.preprocess import bench_preprocess
    result = bench_preprocess(bundle.manifest.preprocessing, camera_frames(4, (1024, 1280)), rounds=7)
    result.speedup.median, result.speedup.low, result.speedup.high    # old ms / new ms, over the rounds

``reference_preprocess`` is the replaced implementation, kept as the yardstick and as the proof that
the fused one gives the same numbers (tests/test_preprocess.py compares them bit for bit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np
from pydantic import BaseModel

from lineguard.bench.rounds import Spread, interleaved_rounds, ratio_spread
from lineguard.runtime.bundle import Preprocessing
from lineguard.runtime.inference.preprocess import ChannelOrder, Preprocessor, as_three_channel, resize_to


def reference_preprocess(spec: Preprocessing, images: Sequence[np.ndarray], order: ChannelOrder = "BGR") -> np.ndarray:
    """The previous preprocessing, step by step: RGB at full resolution, resize, astype, subtract,
    multiply, (flip), transpose copy, stack."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, 3)
    inv_std = (1.0 / np.asarray(spec.std, dtype=np.float32)).reshape(1, 1, 3)
    out = []
    for image in images:
        rgb = resize_to(as_three_channel(image, order), spec.input_size)
        x = (rgb.astype(np.float32) - mean) * inv_std
        if spec.color_order == "BGR":
            x = x[:, :, ::-1]
        out.append(np.ascontiguousarray(x.transpose(2, 0, 1)))
    return np.stack(out)


def camera_frames(count: int, size_hw: tuple[int, int] = (1024, 1280), seed: int = 3) -> list[np.ndarray]:
    """BGR frames at a camera's resolution (smooth texture plus noise, like a part under a lens)."""
    rng = np.random.default_rng(seed)
    h, w = size_hw
    frames = []
    for _ in range(count):
        coarse = rng.integers(40, 220, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        frames.append(cv2.add(smooth, rng.integers(0, 12, (h, w, 3), dtype=np.uint8)))
    return frames


class PreprocessBench(BaseModel):
    frame_shape: tuple[int, ...]
    batch_size: int
    rounds: int
    fused_ms_per_frame: Spread
    reference_ms_per_frame: Spread
    speedup: Spread  # reference ms / fused ms, per round
    max_abs_diff: float


def bench_preprocess(spec: Preprocessing, frames: Sequence[np.ndarray], rounds: int = 7, warmup: int = 2,
                     repeats: int = 5) -> PreprocessBench:
    """Both paths on the same frames, in interleaved rounds (each round times ``repeats`` batches)."""
    fused = Preprocessor(spec)
    batch = list(frames)

    def timed(work) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            work(batch)
        return (time.perf_counter() - start) * 1e3 / (repeats * len(batch))

    per_round = interleaved_rounds({"fused": lambda: timed(fused), "reference": lambda: timed(
        lambda images: reference_preprocess(spec, images))}, rounds=rounds, warmup=warmup)
    diff = float(np.abs(fused(batch) - reference_preprocess(spec, batch)).max())
    return PreprocessBench(frame_shape=tuple(batch[0].shape), batch_size=len(batch), rounds=rounds,
                           fused_ms_per_frame=Spread.of(per_round["fused"]),
                           reference_ms_per_frame=Spread.of(per_round["reference"]),
                           speedup=ratio_spread(per_round["reference"], per_round["fused"]), max_abs_diff=diff)
