"""Driving a running line service with the soak's traffic: every verdict and heartbeat collected, memory
sampled, the outstanding answers drained, the run summarised.

Usage::

    result = run_soak(frames, verdicts, good=parts, defects=painted_defects(parts), product="weave",
                      plan=SoakPlan(duration_s=60), pid=service_pid, explanations=explanations_endpoint)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import zmq

from lineguard.runtime.contract import HEARTBEAT_TOPIC, Heartbeat, Verdict
from lineguard.runtime.security.curve import CurveClientConfig
from lineguard.soak.plan import SoakPlan
from lineguard.soak.report import Arrivals, SoakResult, summarise
from lineguard.soak.sampling import RssSample, sample, service_process
from lineguard.soak.traffic import Camera, ExplanationAsker, send_frames


class VerdictCollector:
    """The SUB side: every verdict with its arrival time, and the first and latest heartbeats."""

    def __init__(self, context: zmq.Context, endpoint: str, curve: CurveClientConfig | None) -> None:
        self.endpoint = endpoint
        self.sub = context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        if curve is not None:
            curve.secure(self.sub)
        self.sub.connect(endpoint)
        self.beats: list[Heartbeat] = []  # the first and the latest
        self.arrivals: Arrivals = {}
        self.lock = threading.Lock()

    def wait_for_heartbeat(self, timeout_s: float) -> None:
        """Subscribed once a heartbeat arrives; RuntimeError when none comes in ``timeout_s``."""
        give_up = time.monotonic() + timeout_s
        while not self.beats:
            if time.monotonic() > give_up:
                raise RuntimeError(f"no heartbeat from {self.endpoint} in {timeout_s:.0f} s: is the service running?")
            if self.sub.poll(200):
                topic, body = self.sub.recv_multipart()
                if topic == HEARTBEAT_TOPIC:
                    self.beats.append(Heartbeat.model_validate_json(body))

    @property
    def dropped(self) -> int:
        """Messages the service counted dropped since the first heartbeat."""
        return self.beats[-1].dropped - self.beats[0].dropped

    def ng_frames(self, last: int = 20) -> list[str]:
        """The newest frame ids judged NG (what a technician would ask about)."""
        with self.lock:
            return [frame for (_, frame), got in self.arrivals.items() if got[0][1].verdict == "NG"][-last:]

    def has(self, expected: set[tuple[str, str]]) -> bool:
        with self.lock:
            return expected <= self.arrivals.keys()

    def collect(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.sub.poll(100):
                continue
            while True:
                try:
                    topic, body = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if topic == HEARTBEAT_TOPIC:
                    self.beats[1:] = [Heartbeat.model_validate_json(body)]
                    continue
                verdict = Verdict.model_validate_json(body)
                with self.lock:
                    self.arrivals.setdefault((verdict.camera_id, verdict.frame_id), []).append(
                        (time.perf_counter(), verdict))

    def close(self) -> None:
        self.sub.close()


def _wait(until: Callable[[], bool], timeout_s: float) -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up and not until():
        time.sleep(0.05)


def run_soak(frames_endpoint: str, verdicts_endpoint: str, good: Sequence[np.ndarray],
             defects: Sequence[np.ndarray], product: str, plan: SoakPlan | None = None,
             pid: int | None = None, explanations: str | None = None,
             curve: CurveClientConfig | None = None) -> SoakResult:
    """Drive a running service (serving ``product``; process ``pid``) with the mixed stream; with
    ``explanations`` (its endpoint) explanation requests too; ``curve``: the client keys of a CURVE line."""
    process = service_process(pid)
    plan = plan or SoakPlan()
    if not good or not defects:
        raise ValueError("the soak needs at least one good and one defective frame")
    context = zmq.Context.instance()
    stop_sending = threading.Event()
    stop_collecting = threading.Event()
    cameras = [Camera(f"soak{i}") for i in range(plan.cameras)]
    rss: list[RssSample] = []

    collector = VerdictCollector(context, verdicts_endpoint, curve)
    try:
        collector.wait_for_heartbeat(plan.connect_timeout_s)
    except RuntimeError:
        collector.close()
        raise

    def sample_rss() -> None:
        while not stop_collecting.wait(plan.rss_interval_s):
            rss.append(sample(process, time.perf_counter() - start))

    asker = ExplanationAsker(context, explanations, curve, plan.seed) if explanations is not None else None

    def ask() -> None:
        assert asker is not None
        next_at = time.perf_counter() + plan.explain_interval_s
        while not stop_collecting.is_set():
            if not stop_sending.is_set() and time.perf_counter() >= next_at:
                next_at += plan.explain_interval_s
                asker.ask(collector.ng_frames())
            if asker.sock.poll(50):
                asker.read()

    start = time.perf_counter()  # the stream starts now: the wait for the service is not part of its warm-up
    rss.append(sample(process, 0.0))
    threads = [threading.Thread(target=collector.collect, args=(stop_collecting,), name="soak-collect", daemon=True),
               threading.Thread(target=sample_rss, name="soak-rss", daemon=True)]
    if asker is not None:
        threads.append(threading.Thread(target=ask, name="soak-explain", daemon=True))
    helpers = len(threads)
    threads += [threading.Thread(target=send_frames, args=(context, frames_endpoint, c, plan, product, good, defects,
                                                           stop_sending, i, curve),
                                 name=f"soak-{c.camera_id}", daemon=True) for i, c in enumerate(cameras)]
    for t in threads:
        t.start()
    try:
        time.sleep(plan.duration_s)
        stop_sending.set()
        for t in threads[helpers:]:
            t.join(10)
        expected = {(c.camera_id, f) for c in cameras for f in c.sent}
        unaddressable = sum(c.unaddressable for c in cameras)

        def answered() -> bool:
            explained = asker is None or asker.unanswered <= 0
            return collector.has(expected) and collector.dropped >= unaddressable and explained

        _wait(answered, plan.drain_timeout_s)
        time.sleep(0.3)  # a duplicate would arrive now
        beat_at = collector.beats[-1].seq
        # a heartbeat sent after the last verdict: its dropped count is final
        _wait(lambda: collector.beats[-1].seq != beat_at, 5)
    finally:
        stop_collecting.set()
        for t in threads[:helpers]:
            t.join(5)
        collector.close()
        if asker is not None:
            asker.close()
    rss.append(sample(process, time.perf_counter() - start))
    result = summarise(plan, cameras, collector.arrivals, expected, unaddressable, collector.dropped, rss)
    if asker is not None:
        result.explanation_requests = asker.requests
        result.explanation_replies = dict(asker.replies)
        result.explanations_unanswered = asker.unanswered
    return result
