"""``lineguard bench vision``: the ONNX Runtime chain against its PyTorch eager reference, same run.

Usage::

    result = bench_vision("bundles/default", batch_sizes=(1, 8))
    result.runs[0].speedup        # ORT frames/s over PyTorch frames/s at batch 1

Both chains run the whole inspection (preprocess, encoder, decoder, few-shot scoring, verdict) of
the same frames with the same thread count, interleaved round by round so that machine noise hits
both alike. A generated product is enrolled into a temporary copy of the bundle.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import onnxruntime
import torch
from pydantic import BaseModel
from tqdm import tqdm

from lineguard.export.reference_chain import TorchVisionChain
from lineguard.export.textures import texture_variants
from lineguard.runtime.bench_backends import BackendTiming
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.enroll import enroll_product
from lineguard.runtime.inspector import Inspector

BENCH_PRODUCT = "bench-weave"


class BatchRun(BaseModel):
    """One batch size. ``chain``: preprocess + encoder + decoder, the exported models (the headline
    ratio). ``inspection``: the whole verdict, adding the few-shot scoring that both share (numpy)."""

    batch_size: int
    onnxruntime: BackendTiming
    pytorch_eager: BackendTiming
    speedup: float
    inspection_onnxruntime: BackendTiming
    inspection_pytorch_eager: BackendTiming
    inspection_speedup: float


class VisionBench(BaseModel):
    bundle_id: str
    threads: int
    machine: str
    versions: dict[str, str]
    runs: list[BatchRun]


def bench_vision(bundle_dir: str | Path, batch_sizes: Sequence[int] = (1, 8), rounds: int = 30,
                 warmup: int = 3, threads: int | None = None) -> VisionBench:
    threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    frames = texture_variants("weave", 8 + max(batch_sizes), seed=11)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-bench-") as bundle:
        ort_inspector = Inspector(bundle, threads=threads)
        enroll_product(bundle, BENCH_PRODUCT, frames[:4], chain=ort_inspector.chain)
        torch_inspector = Inspector(bundle, chain=TorchVisionChain(bundle, threads=threads))
        runs = []
        for batch in batch_sizes:
            images = frames[8 : 8 + batch]
            inspectors = {"onnxruntime": ort_inspector, "pytorch": torch_inspector}

            def chain_only(inspector: Inspector, images=images) -> None:
                inspector.chain.run(inspector.chain.preprocessor(images))

            def inspection(inspector: Inspector, images=images) -> None:
                inspector.analyze(images, BENCH_PRODUCT)

            timings: dict[tuple[str, str], list[float]] = {}
            for _ in range(warmup):
                for inspector in inspectors.values():
                    inspection(inspector)
            for _ in tqdm(range(rounds), desc=f"bench vision batch {batch}", unit="round"):
                for what, work in (("chain", chain_only), ("inspection", inspection)):
                    for name, inspector in inspectors.items():
                        start = time.perf_counter()
                        work(inspector)
                        timings.setdefault((what, name), []).append(time.perf_counter() - start)
            ort_name = "onnxruntime-" + ",".join(ort_inspector.chain.providers)
            t = {key: BackendTiming.from_rounds(ort_name if key[1] == "onnxruntime" else "pytorch-eager", v, batch) for key, v in timings.items()}
            runs.append(BatchRun(
                batch_size=batch,
                onnxruntime=t["chain", "onnxruntime"], pytorch_eager=t["chain", "pytorch"],
                speedup=t["chain", "onnxruntime"].frames_per_s / t["chain", "pytorch"].frames_per_s,
                inspection_onnxruntime=t["inspection", "onnxruntime"], inspection_pytorch_eager=t["inspection", "pytorch"],
                inspection_speedup=t["inspection", "onnxruntime"].frames_per_s / t["inspection", "pytorch"].frames_per_s,
            ))
        return VisionBench(
            bundle_id=bundle.manifest.bundle_id, threads=threads,
            machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
            versions={"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
            runs=runs,
        )
