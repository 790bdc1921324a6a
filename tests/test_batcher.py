"""MicroBatcher: same-product batches, queue delay, bounded queue, deadlines, errors; one verdict per request.

A scripted analyzer makes timing deterministic; where deadlines and batch latency decide the outcome, a
fake clock that only inference advances (``KnownLatencyAnalyzer``) makes it exact: no test here depends
on how fast this machine is. One test runs the real Inspector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.batch_latency import warm_up_sizes
from lineguard.runtime.batcher import BatcherClosed, FrameRequest, MicroBatcher
from lineguard.runtime.inspector import Inspection, Inspector, UnknownProductError
from lineguard.runtime.messages import Verdict
from lineguard.runtime.wire import ErrorCode, FrameError

IMAGE = np.zeros((16, 16, 3), np.uint8)


class ScriptedAnalyzer:
    """Records batches; ``gate`` holds inference until set; ``fail`` raises for chosen products."""

    def __init__(self, delay_s: float = 0.0, fail: dict[str | None, Exception] | None = None) -> None:
        self.batches: list[tuple[str | None, int]] = []
        self.delay_s = delay_s
        self.fail = fail or {}
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        self.entered.set()
        self.batches.append((product, len(images)))
        assert self.gate.wait(10)
        time.sleep(self.delay_s)
        if product in self.fail:
            raise self.fail[product]
        return [Inspection(Verdict(product=product or "", verdict="OK", score=1.0), np.zeros((4, 4), np.float32),
                           image) for image in images]


class FakeClock:
    """Seconds that pass only when a test or an inference says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance_to(self, t: float) -> None:
        with self.lock:
            self.now = max(self.now, t)


def linear(size: int) -> float:
    return 0.02 + 0.05 * size  # a batch of 8 takes 0.42 s: 19 frames/s at best, the 200 ms deadline holds 3.8


class KnownLatencyAnalyzer(ScriptedAnalyzer):
    """A batch of n ends ``latency(n)`` clock seconds after it started (no real sleep); ``gate`` holds it."""

    def __init__(self, clock: FakeClock, latency: Callable[[int], float] = linear) -> None:
        super().__init__()
        self.clock = clock
        self.latency = latency

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        started = self.clock()
        results = super().analyze(images, product)
        self.clock.advance_to(started + self.latency(len(images)))
        return results


class Collector:
    def __init__(self) -> None:
        self.verdicts: dict[str, list[Verdict]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: FrameRequest, verdict: Verdict) -> None:
        with self.lock:
            self.verdicts.setdefault(request.frame_id, []).append(verdict)

    def wait(self, n: int, timeout_s: float = 10.0) -> None:
        end = time.monotonic() + timeout_s
        while len(self.verdicts) < n and time.monotonic() < end:
            time.sleep(0.005)
        assert len(self.verdicts) >= n, f"{len(self.verdicts)} of {n} verdicts"

    def one(self, frame_id: str) -> Verdict:
        assert len(self.verdicts[frame_id]) == 1, self.verdicts[frame_id]
        return self.verdicts[frame_id][0]


def request(frame_id: str, product: str | None = "a", deadline_s: float = 10.0,
            load: Callable[[], np.ndarray] = lambda: IMAGE, clock: Callable[[], float] = time.monotonic) -> FrameRequest:
    now = clock()
    return FrameRequest("cam0", frame_id, product, deadline=now + deadline_s, load=load, received=now)


@pytest.fixture
def make() -> Callable[..., tuple[MicroBatcher, Collector]]:
    made: list[MicroBatcher] = []

    def build(analyzer: ScriptedAnalyzer, start: bool = True, **options: object) -> tuple[MicroBatcher, Collector]:
        sink = Collector()
        batcher = MicroBatcher(analyzer, sink, bundle_id="test", **options)
        if start:
            batcher.start()
        made.append(batcher)
        return batcher, sink

    yield build
    for b in made:
        b.close(timeout_s=1.0)


def test_batches_hold_one_product_and_at_most_max_batch(make) -> None:
    analyzer = ScriptedAnalyzer()
    analyzer.gate.clear()
    batcher, sink = make(analyzer, max_batch=4, max_queue_delay_ms=50)
    assert batcher.submit(request("warm", "a"))  # occupies the worker while the others queue up
    assert analyzer.entered.wait(5)
    products = ["a", "b"] * 5
    for i, p in enumerate(products):
        assert batcher.submit(request(f"f{i}", p))
    analyzer.gate.set()
    sink.wait(11)
    assert analyzer.batches == [("a", 1), ("a", 4), ("b", 4), ("a", 1), ("b", 1)]
    assert all(sink.one(f"f{i}").verdict == "OK" and sink.one(f"f{i}").product == p for i, p in enumerate(products))


def test_a_lone_request_waits_only_the_queue_delay(make) -> None:
    analyzer = ScriptedAnalyzer()
    batcher, sink = make(analyzer, max_batch=8, max_queue_delay_ms=30)
    start = time.monotonic()
    batcher.submit(request("f"))
    sink.wait(1)
    assert 0.025 <= time.monotonic() - start < 1.0
    assert analyzer.batches == [("a", 1)]
    verdict = sink.one("f")
    assert verdict.camera_id == "cam0" and verdict.frame_id == "f" and verdict.latency_ms.total >= 25


def test_full_queue_refuses(make) -> None:
    analyzer = ScriptedAnalyzer()
    analyzer.gate.clear()
    batcher, sink = make(analyzer, max_batch=1, max_queue=3, max_queue_delay_ms=0)
    batcher.submit(request("busy"))
    assert analyzer.entered.wait(5)
    assert [batcher.submit(request(f"q{i}")) for i in range(5)] == [True, True, True, False, False]
    assert batcher.queued == 3
    analyzer.gate.set()
    sink.wait(4)
    assert sorted(sink.verdicts) == ["busy", "q0", "q1", "q2"]


def test_deadline_passed_in_the_queue_is_timeout_without_inference(make) -> None:
    analyzer = ScriptedAnalyzer()
    analyzer.gate.clear()
    batcher, sink = make(analyzer, max_batch=8, max_queue_delay_ms=0)
    batcher.submit(request("busy", "b"))
    assert analyzer.entered.wait(5)
    batcher.submit(request("late", deadline_s=0.05))
    batcher.submit(request("fine", deadline_s=10))
    sink.wait(1, timeout_s=2)  # the deadline watch answers while the worker is still busy
    assert sink.one("late").verdict == "TIMEOUT"
    analyzer.gate.set()
    sink.wait(3)
    assert sink.one("fine").verdict == "OK"
    assert ("a", 1) in analyzer.batches and ("a", 2) not in analyzer.batches


def test_overload_sheds_frames_that_cannot_make_their_deadline(make) -> None:
    """Inference takes 0.2 s a frame; ten frames with 0.7 s to live arrive at once. Three can make it;
    the rest are answered TIMEOUT as soon as that is certain, without spending inference on them."""
    clock = FakeClock()
    analyzer = KnownLatencyAnalyzer(clock, latency=lambda size: 0.2)
    batcher, sink = make(analyzer, start=False, max_batch=1, max_queue_delay_ms=0, clock=clock)
    start = clock()
    for i in range(10):
        assert batcher.submit(request(f"f{i}", deadline_s=0.7, clock=clock))
    batcher.start()
    sink.wait(10)
    answered = {f: sink.one(f) for f in sink.verdicts}
    judged = [f for f, v in answered.items() if v.verdict == "OK"]
    assert len(judged) == 3 and {"f0", "f1"} <= set(judged)  # the third: the one with the most slack left
    assert all(v.verdict == "TIMEOUT" for f, v in answered.items() if f not in judged)
    assert len(analyzer.batches) == 3  # no inference for a frame that was going to miss its deadline
    assert all(v.latency_ms.total < 700 for f, v in answered.items() if f not in judged)  # told before the deadline
    assert clock() - start == pytest.approx(0.6)
    assert batcher.shed == 7


class SlowThenFast(KnownLatencyAnalyzer):
    """The first batch takes 0.4 s (a cold cache, a burst), every later one 10 ms."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, latency=lambda size: 0.4 if len(self.batches) == 1 else 0.01)


def test_one_slow_batch_does_not_shut_the_line_out(make) -> None:
    """The estimate after a 0.4 s batch is longer than a 0.25 s deadline: the batcher must not trust it
    for ever (a lone frame runs anyway and measures again), so the line recovers at once."""
    clock = FakeClock()
    analyzer = SlowThenFast(clock)
    batcher, sink = make(analyzer, max_batch=1, max_queue_delay_ms=0, clock=clock)
    batcher.submit(request("slow", deadline_s=0.25, clock=clock))
    sink.wait(1)
    assert sink.one("slow").verdict == "TIMEOUT"
    for i in range(5):
        batcher.submit(request(f"after{i}", deadline_s=0.25, clock=clock))
        sink.wait(2 + i)
    assert [sink.one(f"after{i}").verdict for i in range(5)] == ["OK"] * 5
    assert len(analyzer.batches) == 6


def burst_into(make, deadline_aware: bool) -> tuple[MicroBatcher, Collector, KnownLatencyAnalyzer, float]:
    """60 frames with 200 ms to live queued at once into a warmed-up batcher (max_batch 8), and a 61st
    arriving 100 ms later, while the burst's first batch is in inference."""
    clock = FakeClock()
    analyzer = KnownLatencyAnalyzer(clock)
    batcher, sink = make(analyzer, start=False, max_batch=8, max_queue_delay_ms=5, clock=clock,
                         deadline_aware=deadline_aware)
    batcher.warm_up(IMAGE, "a")
    assert [size for _, size in analyzer.batches] == [1, 8, *warm_up_sizes(8)]
    analyzer.batches.clear()
    analyzer.entered.clear()
    analyzer.gate.clear()
    start = clock()
    for k in range(60):
        assert batcher.submit(request(f"b{k}", deadline_s=0.2, clock=clock))
    batcher.start()
    assert analyzer.entered.wait(5)
    clock.advance_to(start + 0.1)
    batcher.submit(request("after", deadline_s=0.2, clock=clock))
    analyzer.gate.set()
    sink.wait(61)
    return batcher, sink, analyzer, start


def test_a_burst_beyond_capacity_is_judged_up_to_deadline_times_capacity(make) -> None:
    batcher, sink, analyzer, _ = burst_into(make, deadline_aware=True)
    verdicts = {f"b{k}": sink.one(f"b{k}") for k in range(60)}  # exactly one verdict each
    judged = [f for f, v in verdicts.items() if v.verdict == "OK"]
    ideal = 0.2 * 8 / linear(8)
    assert len(judged) >= 0.6 * ideal
    assert [size for _, size in analyzer.batches] == [len(judged), 1]  # no inference spent in vain
    assert all(v.verdict == "TIMEOUT" and v.latency_ms.total == 0 for f, v in verdicts.items() if f not in judged)
    assert sink.one("after").verdict == "OK"  # the line is on time again right after the burst's batch
    assert batcher.shed == 60 - len(judged)


def test_without_deadline_awareness_the_same_burst_judges_nothing(make) -> None:
    _, sink, analyzer, _ = burst_into(make, deadline_aware=False)
    assert {sink.one(f"b{k}").verdict for k in range(60)} == {"TIMEOUT"}
    assert sink.one("after").verdict == "TIMEOUT"  # once late, the queue stays late
    assert analyzer.batches[0] == ("a", 8)


def test_deadline_passing_during_inference_is_timeout_once(make) -> None:
    analyzer = ScriptedAnalyzer(delay_s=0.3)
    batcher, sink = make(analyzer, max_queue_delay_ms=0)
    start = time.monotonic()
    batcher.submit(request("f", deadline_s=0.05))
    sink.wait(1)
    assert time.monotonic() - start < 0.25  # answered at the deadline, not when inference returned
    time.sleep(0.4)  # the late result arrives and is discarded
    assert sink.one("f").verdict == "TIMEOUT"


def test_inference_error_answers_each_frame_and_the_worker_goes_on(make) -> None:
    analyzer = ScriptedAnalyzer(fail={"bad": RuntimeError("onnx exploded"), "gone": UnknownProductError("gone")})
    analyzer.gate.clear()
    batcher, sink = make(analyzer, max_batch=4, max_queue_delay_ms=0)
    batcher.submit(request("hold", "x"))
    assert analyzer.entered.wait(5)
    for i in range(3):
        batcher.submit(request(f"bad{i}", "bad"))
    batcher.submit(request("gone", "gone"))
    batcher.submit(request("ok", "a"))
    analyzer.gate.set()
    sink.wait(6)
    for i in range(3):
        verdict = sink.one(f"bad{i}")
        assert verdict.verdict == "ERROR" and verdict.error.code == "INTERNAL" and "onnx exploded" in verdict.error.message
    assert sink.one("gone").error.code == ErrorCode.UNKNOWN_PRODUCT
    assert sink.one("ok").verdict == "OK"


def test_decode_error_answers_that_frame_only(make) -> None:
    def broken() -> np.ndarray:
        raise FrameError(ErrorCode.BAD_PAYLOAD, "jpeg stream is corrupt")

    def crashing() -> np.ndarray:
        raise MemoryError("no room")

    analyzer = ScriptedAnalyzer()
    analyzer.gate.clear()
    batcher, sink = make(analyzer, max_batch=8, max_queue_delay_ms=0)
    batcher.submit(request("hold", "x"))
    assert analyzer.entered.wait(5)
    batcher.submit(request("good1"))
    batcher.submit(request("broken", load=broken))
    batcher.submit(request("crashing", load=crashing))
    batcher.submit(request("good2"))
    analyzer.gate.set()
    sink.wait(5)
    assert sink.one("broken").error.code == "BAD_PAYLOAD"
    assert sink.one("crashing").error.code == "INTERNAL"
    assert sink.one("good1").verdict == sink.one("good2").verdict == "OK"
    assert analyzer.batches[-1] == ("a", 2)


def test_close_drains_and_refuses_new_requests(make) -> None:
    analyzer = ScriptedAnalyzer(delay_s=0.02)
    batcher, sink = make(analyzer, max_batch=2, max_queue_delay_ms=1000)
    for i in range(5):
        batcher.submit(request(f"f{i}"))
    batcher.close(timeout_s=5)
    assert {f: sink.one(f).verdict for f in sink.verdicts} == {f"f{i}": "OK" for i in range(5)}
    with pytest.raises(BatcherClosed):
        batcher.submit(request("after"))


def test_close_timeout_answers_what_is_left(make) -> None:
    analyzer = ScriptedAnalyzer()
    analyzer.gate.clear()  # inference hangs
    batcher, sink = make(analyzer, max_batch=1, max_queue_delay_ms=0)
    for i in range(3):
        batcher.submit(request(f"f{i}"))
    assert analyzer.entered.wait(5)
    batcher.close(timeout_s=0.1)
    assert {f: sink.one(f).verdict for f in sink.verdicts} == {f"f{i}": "TIMEOUT" for i in range(3)}
    analyzer.gate.set()  # the stuck worker returns; its result is discarded
    time.sleep(0.05)
    assert all(len(v) == 1 for v in sink.verdicts.values())


def test_with_the_real_inspector(enrolled_dir: Path, weave_parts: list[np.ndarray]) -> None:
    sink = Collector()
    batcher = MicroBatcher(Inspector(enrolled_dir), sink, max_batch=4, max_queue_delay_ms=20).start()
    try:
        for i, part in enumerate(weave_parts[4:8]):
            batcher.submit(FrameRequest("cam0", f"p{i}", "weave", time.monotonic() + 30, load=lambda p=part: p))
        sink.wait(4, timeout_s=30)
    finally:
        batcher.close()
    verdicts = [sink.one(f"p{i}") for i in range(4)]
    assert [v.verdict for v in verdicts] == ["OK"] * 4
    assert all(v.decided_by == "few-shot" and v.bundle_id and v.latency_ms.encoder > 0 for v in verdicts)
