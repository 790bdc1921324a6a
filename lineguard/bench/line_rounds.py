"""The line service's comparisons in interleaved rounds: ZeroMQ against in-process calls per batch
size, micro-batching's gain, and the verdict p99 with explanations streaming against without.

Usage::

    result = line_rounds(inspector, frames, batch_sizes=(1, 8), rounds=5)
    result.zeromq_vs_direct["8"].effect()     # "0.96x (0.93-0.99)" or "no measurable difference ..."
    result.microbatch_gain.median             # ZeroMQ frames/s at the largest max_batch over the smallest

Each round runs every mode of every batch size once, back to back (the order alternating between
rounds), with the runs of ``lineguard.bench.line`` (``direct_run``, ``zeromq_run``); ratios
are taken within a round, and every figure is reported as its median with the min-max over rounds.
One pass, as ``bench line`` makes, cannot tell a 1.4x effect from a burst of load on the machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from lineguard.bench.line import LineRun, direct_run, zeromq_run
from lineguard.bench.rounds import Spread, ratio_spread
from lineguard.runtime.scoring.inspector import Inspector


class LineRoundsRun(BaseModel):
    mode: str  # "direct" | "zeromq" | "zeromq+explanations"
    max_batch: int
    frames: int
    frames_per_s: Spread
    latency_p50_ms: Spread
    latency_p99_ms: Spread


class LineRounds(BaseModel):
    rounds: int
    runs: list[LineRoundsRun]
    zeromq_vs_direct: dict[str, Spread]  # per max_batch: ZeroMQ frames/s over in-process frames/s
    p50_added_ms: dict[str, Spread]  # per max_batch: ZeroMQ p50 minus in-process p50
    microbatch_gain: Spread | None  # ZeroMQ frames/s at the largest max_batch over the smallest
    p99_with_explanations_ratio: Spread | None = None  # verdict p99 while explanations stream / without


def _summarise(runs: list[LineRun]) -> LineRoundsRun:
    first = runs[0]
    return LineRoundsRun(mode=first.mode, max_batch=first.max_batch, frames=first.frames,
                         frames_per_s=Spread.of([r.frames_per_s for r in runs]),
                         latency_p50_ms=Spread.of([r.latency_p50_ms for r in runs]),
                         latency_p99_ms=Spread.of([r.latency_p99_ms for r in runs]))


def line_rounds(inspector: Inspector, frames: Sequence[np.ndarray], batch_sizes: Sequence[int] = (1, 8),
                rounds: int = 5, explain_archive: Path | None = None, progress: bool = True) -> LineRounds:
    """``explain_archive``: also, per round, the smallest batch over ZeroMQ with explanations streaming
    (needs an LLM in the bundle). The inspector's product must be enrolled (bench_line.BENCH_PRODUCT)."""
    modes: list[tuple[str, int]] = [(m, b) for b in batch_sizes for m in ("direct", "zeromq")]
    if explain_archive is not None:
        modes.append(("zeromq+explanations", min(batch_sizes)))
    results: dict[tuple[str, int], list[LineRun]] = {key: [] for key in modes}

    def run(mode: str, batch: int) -> LineRun:
        if mode == "direct":
            return direct_run(inspector, frames, batch)
        if mode == "zeromq":
            return zeromq_run(inspector, frames, batch)
        explained = zeromq_run(inspector, frames, batch, explain_archive=explain_archive)
        return explained.model_copy(update={"mode": mode})

    for r in tqdm(range(rounds), desc="bench line rounds", unit="round", disable=not progress):
        for mode, batch in modes if r % 2 == 0 else list(reversed(modes)):
            results[mode, batch].append(run(mode, batch))

    def fps(mode: str, batch: int) -> list[float]:
        return [x.frames_per_s for x in results[mode, batch]]

    ratios = {str(b): ratio_spread(fps("zeromq", b), fps("direct", b)) for b in batch_sizes}
    added = {str(b): Spread.of([z.latency_p50_ms - d.latency_p50_ms
                                for z, d in zip(results["zeromq", b], results["direct", b], strict=True)])
             for b in batch_sizes}
    gain = None
    if len(batch_sizes) > 1:
        gain = ratio_spread(fps("zeromq", max(batch_sizes)), fps("zeromq", min(batch_sizes)))
    p99 = None
    if explain_archive is not None:
        b = min(batch_sizes)
        p99 = ratio_spread([x.latency_p99_ms for x in results["zeromq+explanations", b]],
                           [x.latency_p99_ms for x in results["zeromq", b]])
    return LineRounds(rounds=rounds, runs=[_summarise(v) for v in results.values()], zeromq_vs_direct=ratios,
                      p50_added_ms=added, microbatch_gain=gain, p99_with_explanations_ratio=p99)
