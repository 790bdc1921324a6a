"""Open-loop offered load: a camera pushing at a fixed rate, whatever the service's pace (as a real one does).

Usage::

    from lineguard.bench.load import offered_load_run

    run = offered_load_run(inspector, frames, "bench-line", rate_fps=12.0, duration_s=10.0, max_batch=4)
    run.achieved_fps, run.latency_p99_ms, run.timeouts, run.overloaded

Unlike ``bench line`` (closed loop: a bounded window of frames in flight, so the service is saturated but
never overloaded), the sender here never waits for verdicts: below capacity latency is the service's
own, near it queueing shows, beyond it frames end as TIMEOUT (deadline) or OVERLOADED (queue full).
Every frame still gets one verdict; ``verdicts == frames_sent`` is part of the result.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import zmq
from pydantic import BaseModel

from lineguard.runtime.contract import HEARTBEAT_TOPIC, Verdict, encode_frame, new_header
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.inspector import Inspector


class LoadRun(BaseModel):
    offered_fps: float
    duration_s: float
    max_batch: int
    deadline_ms: float
    frames_sent: int
    verdicts: int
    achieved_fps: float  # inspected verdicts (OK/NG) per second, first send to last such verdict
    latency_p50_ms: float  # inspected frames: send to verdict arrival
    latency_p99_ms: float
    timeouts: int
    overloaded: int


@contextmanager
def loopback_line(inspector: Inspector, product: str, deadline_ms: float, max_batch: int, deadline_aware: bool = True,
                  line: str = "load") -> Iterator[tuple[LineServer, zmq.Socket, zmq.Socket]]:
    """A warmed-up line on loopback (no explanations) with a subscribed SUB and a connected PUSH."""
    loopback = "tcp://127.0.0.1:*"
    config = LineConfig(line=line, endpoints={"frames": loopback, "verdicts": loopback, "inspect": loopback,
                                                 "explanations": loopback},
                        products=[product], deadline_ms=deadline_ms,
                        batching={"max_batch": max_batch, "max_queue_delay_ms": 5.0, "max_queue": 64,
                                  "deadline_aware": deadline_aware},
                        hwm={"frames_rcv": 256, "verdicts_snd": 10_000}, explanations={"enabled": False})
    context = zmq.Context.instance()
    with LineServer(inspector, config, context=context) as server:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(server.endpoints.verdicts)
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 4096)
        push.connect(server.endpoints.frames)
        try:
            ready_by = time.monotonic() + 5
            while time.monotonic() < ready_by:  # subscribed once the first heartbeat arrives
                if sub.poll(200) and sub.recv_multipart()[0] == HEARTBEAT_TOPIC:
                    break
            yield server, sub, push
        finally:
            sub.close()
            push.close()


def offered_load_run(inspector: Inspector, frames: Sequence[np.ndarray], product: str, rate_fps: float,
                     duration_s: float, max_batch: int = 4, deadline_ms: float = 1000.0,
                     drain_s: float = 30.0) -> LoadRun:
    if rate_fps <= 0 or duration_s <= 0:
        raise ValueError("rate_fps and duration_s must be positive")
    payloads = [encode_frame(new_header("cam0", "x", product), f)[1] for f in frames]
    sent_at: dict[str, float] = {}
    arrived: dict[str, tuple[float, Verdict]] = {}
    with loopback_line(inspector, product, deadline_ms, max_batch) as (_, sub, push):
        def receive(until: float) -> None:
            while True:
                wait_ms = max(0, int((until - time.perf_counter()) * 1e3))
                if not sub.poll(wait_ms):
                    return
                topic, body = sub.recv_multipart()
                if topic != HEARTBEAT_TOPIC:
                    verdict = Verdict.model_validate_json(body)
                    arrived.setdefault(verdict.frame_id, (time.perf_counter(), verdict))
                if time.perf_counter() >= until:
                    return

        period = 1.0 / rate_fps
        start = time.perf_counter()
        n = 0
        while (next_at := start + n * period) < start + duration_s:
            receive(next_at)  # verdicts are read while waiting for the next send slot
            frame_id = f"f{n}"
            header = new_header("cam0", frame_id, product).model_copy(update={"shape": frames[n % len(frames)].shape})
            sent_at[frame_id] = time.perf_counter()
            push.send_multipart([header.model_dump_json(exclude_none=True).encode(), payloads[n % len(frames)]],
                                copy=False)
            n += 1
        give_up = time.perf_counter() + drain_s
        while len(arrived) < len(sent_at) and time.perf_counter() < give_up:
            receive(min(give_up, time.perf_counter() + 0.2))
    kinds = Counter(v.error.code if v.error else v.verdict for _, v in arrived.values())
    judged = [(t, sent_at[f]) for f, (t, v) in arrived.items() if v.verdict in ("OK", "NG")]
    ms = np.asarray([(t - sent) * 1e3 for t, sent in judged] or [float("nan")])
    span = max((t for t, _ in judged), default=start + duration_s) - start
    return LoadRun(
        offered_fps=rate_fps, duration_s=duration_s, max_batch=max_batch, deadline_ms=deadline_ms,
        frames_sent=len(sent_at), verdicts=len(arrived), achieved_fps=len(judged) / max(span, 1e-9),
        latency_p50_ms=float(np.percentile(ms, 50)), latency_p99_ms=float(np.percentile(ms, 99)),
        timeouts=kinds.get("TIMEOUT", 0), overloaded=kinds.get("OVERLOADED", 0),
    )
