"""``lineguard bench vision``: the ONNX Runtime chain against its PyTorch eager reference, same run.

Usage::

    result = bench_vision("bundles/default", batch_sizes=(1, 8))
    result.runs[0].speedup        # PyTorch ms / ORT ms at batch 1, median over the rounds
    result.runs[0].speedup_spread.effect()    # "3.41x (3.20-3.62)", or "no measurable difference ..."
    result.runs[0].stages_ms["preprocess"].median, result.preprocess[1].speedup.median

Both chains run the whole inspection (preprocess, encoder, decoder, few-shot scoring, verdict) of
the same frames with the same thread count, in interleaved rounds (lineguard.bench.rounds:
the order alternating, ``per_round`` calls each) so that machine noise hits both alike; each figure
is the median over the rounds with its min-max, each ratio is taken per round. ``stages_ms`` breaks
ONNX Runtime's inspection into preprocess / encoder / decoder / scoring (from the verdicts' own
latency), and ``preprocess`` measures the fused preprocessing against the path it replaced, at the
bench frames' size and at a camera's. A generated product is enrolled into a temporary copy of the bundle.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

import onnxruntime
import torch
from pydantic import BaseModel
from tqdm import tqdm

from lineguard.bench.backends import BackendTiming, timed_ms_per_frame
from lineguard.bench.preprocess import PreprocessBench, bench_preprocess, camera_frames
from lineguard.bench.rounds import Spread, interleaved_rounds, ratio_spread
from lineguard.export.cpu_int8 import quantize_encoder
from lineguard.export.reference_chain import TorchVisionChain
from lineguard.export.textures import texture_variants
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector

BENCH_PRODUCT = "bench-weave"
WHOLE_PRODUCT = "bench-weave-whole"  # with --tiles: the same shots, inspected whole


class BatchRun(BaseModel):
    """One batch size. ``chain``: preprocess + encoder + decoder, the exported models (the headline
    ratio). ``inspection``: the whole verdict, adding the few-shot scoring that both share (numpy).
    Speed-ups are medians over rounds of PyTorch ms / ONNX Runtime ms; ``*_spread`` their min-max."""

    batch_size: int
    onnxruntime: BackendTiming
    pytorch_eager: BackendTiming
    speedup: float
    speedup_spread: Spread | None = None
    inspection_onnxruntime: BackendTiming
    inspection_pytorch_eager: BackendTiming
    inspection_speedup: float
    inspection_speedup_spread: Spread | None = None
    stages_ms: dict[str, Spread] = {}  # ONNX Runtime inspection per frame: preprocess, encoder, decoder, scoring
    # ONNX Runtime with the INT8 encoder (static quantisation calibrated on the bench product's normals)
    onnxruntime_int8: BackendTiming | None = None
    inspection_onnxruntime_int8: BackendTiming | None = None
    int8_inspection_speedup: Spread | None = None  # FP32 ms / INT8 ms, whole inspection, per round
    int8_verdicts_equal: float | None = None  # share of the batch's verdicts equal to FP32's
    # with tiles: the same frames inspected whole (one encoder pass each), in the same rounds
    inspection_onnxruntime_whole: BackendTiming | None = None
    tiled_cost: Spread | None = None  # tiled ms / whole ms, whole inspection (ONNX Runtime), per round


class VisionBench(BaseModel):
    bundle_id: str
    threads: int
    machine: str
    versions: dict[str, str]
    rounds: int = 0
    tiles: int = 1  # the bench product's frames, as tiles per side (enroll --tiles)
    runs: list[BatchRun]
    preprocess: list[PreprocessBench] = []


STAGES = ("preprocess", "encoder", "decoder", "scoring")


def _int8_figures(ms: dict[str, list[float]], t: dict[str, BackendTiming], fp32: Inspector, int8: Inspector,
                  images: Sequence) -> dict:
    want = [r.verdict.verdict for r in fp32.analyze(images, BENCH_PRODUCT)]
    got = [r.verdict.verdict for r in int8.analyze(images, BENCH_PRODUCT)]
    return {"onnxruntime_int8": t["chain/onnxruntime-int8"],
            "inspection_onnxruntime_int8": t["inspection/onnxruntime-int8"],
            "int8_inspection_speedup": ratio_spread(ms["inspection/onnxruntime"], ms["inspection/onnxruntime-int8"]),
            "int8_verdicts_equal": sum(a == b for a, b in zip(want, got, strict=True)) / len(want)}


def bench_vision(bundle_dir: str | Path, batch_sizes: Sequence[int] = (1, 8), rounds: int = 7,
                 warmup: int = 1, threads: int | None = None, per_round: int = 3,
                 camera_size: tuple[int, int] = (1024, 1280), int8: bool = True, tiles: int = 1) -> VisionBench:
    """``int8``: also the whole inspection with an INT8 encoder (export/cpu_int8.py), calibrated on the
    bench product's normals; timed in the same rounds, its verdicts compared with FP32's. ``tiles``: the
    bench product is enrolled and inspected as that many tiles per side (both chains run them)."""
    threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    frames = texture_variants("weave", 8 + max(batch_sizes), seed=11)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-bench-") as bundle:
        ort_inspector = Inspector(bundle, threads=threads)
        enroll_product(bundle, BENCH_PRODUCT, frames[:4], chain=ort_inspector.chain, tiles=tiles)
        if tiles > 1:  # the same product whole, to put the tiles' cost in one ratio
            enroll_product(bundle, WHOLE_PRODUCT, frames[:4], chain=ort_inspector.chain, tiles=1)
        torch_inspector = Inspector(bundle, chain=TorchVisionChain(bundle, threads=threads))
        ort_name = "onnxruntime-" + ",".join(ort_inspector.chain.providers)
        candidates = [("onnxruntime", ort_inspector), ("pytorch", torch_inspector)]
        int8_inspector = None
        if int8:
            record = quantize_encoder(bundle, frames[:8])
            int8_chain = VisionChain(bundle, threads=threads)
            int8_chain.encoder = OnnxRuntimeBackend(bundle.path(record.file), threads=threads)
            int8_inspector = Inspector(bundle, chain=int8_chain)
            candidates.append(("onnxruntime-int8", int8_inspector))
        runs = []
        for batch in tqdm(batch_sizes, desc="bench vision", unit="batch size"):
            images = frames[8 : 8 + batch]
            stages: dict[str, list[float]] = {stage: [] for stage in STAGES}

            def chain_only(inspector: Inspector, images=images) -> None:
                inspector.chain.run(inspector.chain.preprocessor(images, tiles=tiles), tiles=tiles)

            def inspection(inspector: Inspector, images=images, stages=stages) -> None:
                latency = inspector.analyze(images, BENCH_PRODUCT)[0].verdict.latency_ms
                if inspector is ort_inspector:
                    for stage in STAGES:
                        stages[stage].append(getattr(latency, stage))

            works = {f"{what}/{name}": (lambda work=work, inspector=inspector, batch=batch: timed_ms_per_frame(
                        lambda: work(inspector), per_round, batch))
                     for what, work in (("chain", chain_only), ("inspection", inspection))
                     for name, inspector in candidates}
            if tiles > 1:
                works["inspection/onnxruntime-whole"] = lambda images=images, batch=batch: timed_ms_per_frame(
                    lambda: ort_inspector.analyze(images, WHOLE_PRODUCT), per_round, batch)
            ms = interleaved_rounds(works, rounds=rounds, warmup=warmup)
            for values in stages.values():
                del values[: warmup * per_round]  # the warm-up calls are not part of the breakdown
            names = {"onnxruntime": ort_name, "pytorch": "pytorch-eager", "onnxruntime-int8": f"{ort_name} int8 encoder",
                     "onnxruntime-whole": f"{ort_name} whole frames"}
            t = {key: BackendTiming.from_rounds(names[key.split("/")[1]], v, batch) for key, v in ms.items()}
            speedup = ratio_spread(ms["chain/pytorch"], ms["chain/onnxruntime"])
            inspection_speedup = ratio_spread(ms["inspection/pytorch"], ms["inspection/onnxruntime"])
            runs.append(BatchRun(
                batch_size=batch, onnxruntime=t["chain/onnxruntime"], pytorch_eager=t["chain/pytorch"],
                speedup=speedup.median, speedup_spread=speedup,
                inspection_onnxruntime=t["inspection/onnxruntime"], inspection_pytorch_eager=t["inspection/pytorch"],
                inspection_speedup=inspection_speedup.median, inspection_speedup_spread=inspection_speedup,
                stages_ms={stage: Spread.of(values) for stage, values in stages.items() if values},
                **(_int8_figures(ms, t, ort_inspector, int8_inspector, images) if int8_inspector else {}),
                **({"inspection_onnxruntime_whole": t["inspection/onnxruntime-whole"],
                    "tiled_cost": ratio_spread(ms["inspection/onnxruntime"], ms["inspection/onnxruntime-whole"])}
                   if tiles > 1 else {}),
            ))
        spec = bundle.manifest.preprocessing
        preprocess = [bench_preprocess(spec, frames[8 : 8 + max(batch_sizes)], rounds=rounds),
                      bench_preprocess(spec, camera_frames(max(batch_sizes), camera_size), rounds=rounds)]
        return VisionBench(
            bundle_id=bundle.manifest.bundle_id, threads=threads,
            machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
            versions={"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
            rounds=rounds, tiles=tiles, runs=runs, preprocess=preprocess,
        )
