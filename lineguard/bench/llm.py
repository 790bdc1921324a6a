"""``lineguard bench llm``: time to first token and tokens/s of the bundle's LLM on explanation prompts.

Usage::

    result = bench_llm("bundles/default", rounds=3)
    result.time_to_first_token_ms_p50, result.tokens_per_s

Runs the same worker process the line uses (own process, deterministic decoding) on grounded prompts
for an NG and an OK part.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from lineguard.runtime.bundle import Bundle
from lineguard.runtime.contract import Region, Verdict
from lineguard.runtime.llm.prompts import explanation_messages
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker


class LlmBench(BaseModel):
    model: str
    quantization: str
    threads: int
    load_s: float
    answers: int
    time_to_first_token_ms_p50: float
    time_to_first_token_ms_max: float
    tokens_per_s: float
    completion_tokens_mean: float


SAMPLES = (
    Verdict(product="weave", verdict="NG", score=56.0, p_value=1e-40,
            regions=[Region(grid="top left", bbox=(10, 12, 30, 28), area_fraction=0.04, peak=56.0)]),
    Verdict(product="weave", verdict="OK", score=4.3, p_value=0.6),
)


def bench_llm(bundle_dir: str | Path, rounds: int = 3, threads: int = 2, max_tokens: int = 96) -> LlmBench:
    bundle = Bundle.open(bundle_dir)
    spec = bundle.manifest.llm
    if spec is None:
        raise ValueError(f"bundle {bundle_dir} has no LLM: run `lineguard export llm {bundle_dir}` first")
    t0 = time.perf_counter()
    worker = LlmWorker(bundle.path(spec.file), LlmSettings(n_threads=threads, max_tokens=max_tokens, nice=0)).start()
    load_s = time.perf_counter() - t0
    finals = []
    try:
        for i in range(rounds):
            for j, verdict in enumerate(SAMPLES):
                handle = worker.submit(f"{i}-{j}", explanation_messages(verdict), max_tokens)
                result = None
                while result is None:
                    result = handle.result(1.0)
                if result.final is None:
                    raise RuntimeError(f"LLM failed: {result.error.message if result.error else 'no answer'}")
                finals.append(result.final.stats())
    finally:
        worker.close()
    ttft = np.array([f["time_to_first_token_ms"] for f in finals])
    tokens = np.array([f["completion_tokens"] for f in finals])
    decode_s = np.array([(f["total_ms"] - f["time_to_first_token_ms"]) / 1e3 for f in finals])
    return LlmBench(model=spec.name, quantization=spec.quantization, threads=threads, load_s=load_s,
                    answers=len(finals), time_to_first_token_ms_p50=float(np.median(ttft)),
                    time_to_first_token_ms_max=float(ttft.max()),
                    tokens_per_s=float(max(tokens.sum() - len(finals), 0) / max(decode_s.sum(), 1e-9)),
                    completion_tokens_mean=float(tokens.mean()))
