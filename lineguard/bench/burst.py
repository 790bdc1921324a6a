"""Bursts and sustained overload against the line service: frames judged vs the ideal, and recovery.

Usage::

    from lineguard.bench.burst import burst_run, measure_capacity, sustained_run

    capacity = measure_capacity(inspector, frames, "bench-line", max_batch=8)      # frames/s, in-process
    run = burst_run(inspector, frames, "bench-line", capacity, count=60)          # 60 frames at once
    run.judged, run.ideal_judged, run.first_after_judged, run.recovery_s, run.exactly_one_verdict
    sustained_run(inspector, frames, "bench-line", capacity, factor=5.0)          # 5x capacity for 4 s

A ``LineServer`` on loopback (default line settings: ``max_batch`` 8, 200 ms deadline) gets the overload
from one camera: ``count`` frames back to back (a burst), or ``factor`` x capacity frames/s for
``seconds`` (open loop: the camera never waits). Then the camera goes on at half the capacity for
``after_s``: the first of those frames shows whether the line is on time again.

The ideal is what a server of the measured capacity could judge: ``min(frames, capacity x (send span +
deadline))`` (a burst: deadline x capacity). Capacity is measured in-process right before the run (it
sets the offered rates) and again right after it; the ideal takes their mean, since on a shared machine
capacity moves with the other jobs' load. ``recovery_s`` runs from the last overload frame sent to the
arrival of the first in-time verdict of a frame sent after it (the first of those is sent half a
capacity period later). A judged verdict (OK/NG) is in time by construction: the service answers a
result that comes after the deadline TIMEOUT. Every frame sent must get exactly one verdict.

The ideal assumes the best batch's throughput at any deadline; when a batch of that size takes longer
than the deadline (on a busy 2-core CPU a batch of 8 takes ~0.6-1 s), no scheduler gets there.
``achievable_judged`` is the bound that respects it, from the service's own measured batch latencies:
for a burst, the most frames a sequence of batches can finish within the deadline; for sustained load,
the best frames/s of a batch size that fills and finishes within the deadline at the offered rate.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from lineguard.bench.load import loopback_line
from lineguard.runtime.contract import HEARTBEAT_TOPIC, Verdict, encode_frame, new_header
from lineguard.runtime.scoring.inspector import Inspector

DEFAULT_DEADLINE_MS = 200.0  # the line default: LineConfig.deadline_ms


class OverloadRun(BaseModel):
    scenario: str  # "burst" | "sustained"
    deadline_aware: bool
    max_batch: int
    deadline_ms: float
    capacity_fps: float  # mean of the two measurements: what the ideal is computed with
    capacity_before_fps: float  # measured in-process just before (best batch size up to max_batch)
    capacity_after_fps: float  # and again just after
    offered_fps: float | None  # sustained: the camera's rate; a burst: None (as fast as it can send)
    frames: int  # sent in the burst or the overload
    send_span_s: float  # first to last of them
    ideal_judged: float  # min(frames, capacity x (send span + deadline))
    achievable_judged: float  # the same bound with batches that fit the deadline (measured latencies)
    judged: int  # OK/NG verdicts among them (in time: a late result is TIMEOUT)
    judged_vs_ideal: float
    timeouts: int
    overloaded: int  # answered OVERLOADED (the bounded queue was full)
    other_errors: int
    judged_latency_p50_ms: float | None  # send to verdict arrival, judged frames
    judged_latency_p99_ms: float | None
    after_frames: int  # sent after the overload at half the capacity
    after_judged: int
    first_after_judged: bool  # the first frame sent after the overload was judged in time
    recovery_s: float | None  # last overload frame sent -> first in-time verdict of a frame sent after it
    exactly_one_verdict: bool  # every frame sent got one verdict, none got two
    planned_batch_ms: dict[str, float]  # the service's latency model at the end: batch size -> mean ms


def measure_capacity(inspector: Inspector, frames: Sequence[np.ndarray], product: str, max_batch: int = 8,
                     rounds: int = 3) -> float:
    """Frames/s of ``Inspector.analyze`` in-process at the best of batch 1, max_batch/2 and max_batch
    (median of ``rounds`` timed batches each, after one untimed)."""
    best = 0.0
    for size in sorted({1, (max_batch + 1) // 2, max_batch}):
        batch = [frames[i % len(frames)] for i in range(size)]
        inspector.analyze(batch, product)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            inspector.analyze(batch, product)
            times.append(time.perf_counter() - t0)
        best = max(best, size / float(np.median(times)))
    return best


def burst_run(inspector: Inspector, frames: Sequence[np.ndarray], product: str, capacity_fps: float,
              count: int = 60, deadline_ms: float = DEFAULT_DEADLINE_MS, max_batch: int = 8,
              deadline_aware: bool = True, after_s: float = 2.0) -> OverloadRun:
    """``count`` frames pushed back to back, then half the capacity for ``after_s``."""
    return _run(inspector, frames, product, capacity_fps, "burst", None, count, deadline_ms, max_batch,
                deadline_aware, after_s)


def sustained_run(inspector: Inspector, frames: Sequence[np.ndarray], product: str, capacity_fps: float,
                  factor: float, seconds: float = 4.0, deadline_ms: float = DEFAULT_DEADLINE_MS, max_batch: int = 8,
                  deadline_aware: bool = True, after_s: float = 2.0) -> OverloadRun:
    """``factor`` x capacity frames/s for ``seconds``, then half the capacity for ``after_s``."""
    rate = factor * capacity_fps
    return _run(inspector, frames, product, capacity_fps, "sustained", rate, max(1, round(rate * seconds)),
                deadline_ms, max_batch, deadline_aware, after_s)


def _run(inspector: Inspector, frames: Sequence[np.ndarray], product: str, capacity_fps: float, scenario: str,
         rate_fps: float | None, count: int, deadline_ms: float, max_batch: int, deadline_aware: bool,
         after_s: float) -> OverloadRun:
    if capacity_fps <= 0 or count < 1:
        raise ValueError("capacity_fps and count must be positive")
    payloads = [encode_frame(new_header("cam0", "x", product), f)[1] for f in frames]
    sent_at: dict[str, float] = {}
    arrived: dict[str, tuple[float, Verdict]] = {}
    answers: Counter[str] = Counter()
    after_period = 2.0 / capacity_fps

    with loopback_line(inspector, product, deadline_ms, max_batch, deadline_aware, line="burst") as (server, sub, push):

        def receive(until: float) -> None:
            while True:
                if not sub.poll(max(0, int((until - time.perf_counter()) * 1e3))):
                    return
                topic, body = sub.recv_multipart()
                if topic != HEARTBEAT_TOPIC:
                    verdict = Verdict.model_validate_json(body)
                    answers[verdict.frame_id] += 1
                    arrived.setdefault(verdict.frame_id, (time.perf_counter(), verdict))
                if time.perf_counter() >= until:
                    return

        def send(frame_id: str, k: int) -> None:
            image = frames[k % len(frames)]
            header = new_header("cam0", frame_id, product).model_copy(update={"shape": image.shape})
            sent_at[frame_id] = time.perf_counter()
            push.send_multipart([header.model_dump_json(exclude_none=True).encode(), payloads[k % len(frames)]],
                                copy=False)

        start = time.perf_counter()
        for k in range(count):
            if rate_fps is not None:
                receive(start + k / rate_fps)
            send(f"o{k}", k)
        overload_end = time.perf_counter()
        after_count = max(1, round(after_s / after_period))
        for k in range(after_count):
            receive(overload_end + (k + 1) * after_period)
            send(f"a{k}", k)
        give_up = time.perf_counter() + deadline_ms / 1e3 + 10.0
        while len(arrived) < len(sent_at) and time.perf_counter() < give_up:
            receive(min(give_up, time.perf_counter() + 0.2))
        receive(time.perf_counter() + 0.2)  # a duplicate would come right behind
        units = inspector.frame_units(product)  # the latency model counts frames inspected whole
        planned = {str(size // units): mean * 1e3 for size, mean in server.batcher.latency.measured().items()
                   if size % units == 0}
    capacity_after = measure_capacity(inspector, frames, product, max_batch, rounds=2)
    capacity = (capacity_fps + capacity_after) / 2

    hot = [f"o{k}" for k in range(count)]
    after = [f"a{k}" for k in range(after_count)]
    kinds = Counter(arrived[f][1].error.code if arrived[f][1].error else arrived[f][1].verdict
                    for f in hot if f in arrived)
    judged = kinds.get("OK", 0) + kinds.get("NG", 0)
    timeouts, overloaded = kinds.get("TIMEOUT", 0), kinds.get("OVERLOADED", 0)
    span = sent_at[hot[-1]] - sent_at[hot[0]]
    ideal = min(float(count), capacity * (span + deadline_ms / 1e3))
    achievable = min(ideal, achievable_judged(planned, deadline_ms, count, rate_fps, span))
    ms = [(arrived[f][0] - sent_at[f]) * 1e3 for f in hot if f in arrived and arrived[f][1].verdict in ("OK", "NG")]
    after_ok = [f for f in after if f in arrived and arrived[f][1].verdict in ("OK", "NG")]
    return OverloadRun(
        scenario=scenario, deadline_aware=deadline_aware, max_batch=max_batch, deadline_ms=deadline_ms,
        capacity_fps=capacity, capacity_before_fps=capacity_fps, capacity_after_fps=capacity_after,
        offered_fps=rate_fps, frames=count, send_span_s=span, ideal_judged=ideal,
        achievable_judged=achievable,
        judged=judged, judged_vs_ideal=judged / ideal, timeouts=timeouts, overloaded=overloaded,
        other_errors=sum(kinds.values()) - judged - timeouts - overloaded,
        judged_latency_p50_ms=float(np.percentile(ms, 50)) if ms else None,
        judged_latency_p99_ms=float(np.percentile(ms, 99)) if ms else None,
        after_frames=after_count, after_judged=len(after_ok), first_after_judged=after[0] in after_ok,
        recovery_s=arrived[after_ok[0]][0] - overload_end if after_ok else None,
        exactly_one_verdict=all(answers[f] == 1 for f in sent_at) and set(answers) <= set(sent_at),
        planned_batch_ms=planned,
    )


def achievable_judged(batch_ms: dict[str, float], deadline_ms: float, frames: int, rate_fps: float | None,
                      span_s: float) -> float:
    """The most frames batches of the measured sizes (``batch_ms``: size -> mean ms) can judge in time: a
    burst (``rate_fps`` None) as batches run back to back within the deadline (unbounded knapsack over
    whole milliseconds); sustained load at the best frames/s of a size that fills at ``rate_fps`` and
    still finishes within the deadline, over the send span plus one deadline."""
    costs = {int(size): ms for size, ms in batch_ms.items()}
    if rate_fps is None:
        budget = int(deadline_ms)
        best = [0] * (budget + 1)
        for t in range(1, budget + 1):
            best[t] = max([best[t - 1], *(best[t - int(np.ceil(ms))] + size for size, ms in costs.items()
                                          if ms <= t)])
        return float(min(frames, best[budget]))
    fps = max((size / (ms / 1e3) for size, ms in costs.items() if ms / 1e3 + (size - 1) / rate_fps <= deadline_ms / 1e3),
              default=0.0)
    return min(float(frames), fps * (span_s + deadline_ms / 1e3))


def describe(run: OverloadRun) -> str:
    """One line for the terminal: what was offered, judged vs ideal, the verdict guarantee, recovery."""
    offered = f"{run.frames} frames at once" if run.offered_fps is None else \
        f"{run.offered_fps / run.capacity_before_fps:.0f}x capacity ({run.offered_fps:.1f} frames/s, {run.frames} frames)"
    recovery = f"{run.recovery_s * 1e3:.0f} ms" if run.recovery_s is not None else "never"
    return (f"{run.scenario} {'deadline-aware' if run.deadline_aware else 'plain'}: {offered}, deadline "
            f"{run.deadline_ms:.0f} ms, capacity {run.capacity_before_fps:.1f}-{run.capacity_after_fps:.1f} frames/s "
            f"before-after: judged {run.judged} of ideal {run.ideal_judged:.1f} "
            f"({run.judged_vs_ideal:.0%}; achievable with batches that fit the deadline: "
            f"{run.achievable_judged:.1f}), TIMEOUT {run.timeouts}, OVERLOADED {run.overloaded}; "
            f"exactly one verdict each: {run.exactly_one_verdict}; first frame after judged: "
            f"{run.first_after_judged}, recovery {recovery}")
