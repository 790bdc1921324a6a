"""MicroBatcher: same-product batches, queue delay, bounded queue, deadlines, errors; one verdict per request;
archived before published (off the inference thread); the LLM judge once per batch; each verdict made once.

A scripted analyzer makes timing deterministic; where deadlines and batch latency decide the outcome, a
fake clock that only inference advances (``KnownLatencyAnalyzer``) makes it exact: no test here depends
on how fast this machine is. One test runs the real Inspector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.contract import ErrorCode, FrameError, ImageEvidence, Verdict
from lineguard.runtime.line.analyze import JUDGE_MARGIN_S, JudgePolicy
from lineguard.runtime.line.archive import FrameArchive
from lineguard.runtime.line.batch_latency import warm_up_sizes
from lineguard.runtime.line.batcher import MicroBatcher
from lineguard.runtime.line.config import Batching
from lineguard.runtime.line.pending import BatcherClosed, FrameRequest
from lineguard.runtime.scoring.inspector import Inspection, Inspector, UnknownProductError

IMAGE = np.zeros((16, 16, 3), np.uint8)


class ScriptedAnalyzer:
    """Records batches; ``gate`` holds inference until set; ``fail`` raises for chosen products; ``units``:
    what a frame of a product costs (its tiles per side squared; 1 when not given)."""

    def __init__(self, delay_s: float = 0.0, fail: dict[str | None, Exception] | None = None,
                 units: dict[str, int] | None = None) -> None:
        self.batches: list[tuple[str | None, int]] = []
        self.units = units or {}
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
        return [Inspection(product or "", ng=False, anomaly_map=np.zeros((4, 4), np.float32), model_rgb=image,
                           score=1.0) for image in images]

    def frame_units(self, product: str | None) -> int:
        return self.units.get(product or "", 1)


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
    """A batch of n units ends ``latency(n)`` clock seconds after it started (no real sleep); ``gate`` holds it."""

    def __init__(self, clock: FakeClock, latency: Callable[[int], float] = linear,
                 units: dict[str, int] | None = None) -> None:
        super().__init__(units=units)
        self.clock = clock
        self.latency = latency

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        started = self.clock()
        results = super().analyze(images, product)
        self.clock.advance_to(started + self.latency(len(images) * self.frame_units(product)))
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
        """``options``: fields of the line's ``batching`` section, or MicroBatcher's keyword arguments."""
        sink = Collector()
        batching = Batching(**{k: options.pop(k) for k in list(options) if k in Batching.model_fields})
        batcher = MicroBatcher(analyzer, sink, batching, bundle_id="test", **options)
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


def test_a_tiled_products_frames_are_planned_at_the_cost_of_their_tiles(make) -> None:
    """A product inspected as 2 x 2 tiles: a frame costs 4 whole ones (0.22 s; two 0.42 s). Ten of its frames
    with 0.5 s to live: two make it in one batch and the other eight are told TIMEOUT at once. Planned as
    whole frames, a batch of 8 (0.42 s whole, 1.62 s as tiles) would have run and every frame been late."""
    clock = FakeClock()
    analyzer = KnownLatencyAnalyzer(clock, units={"t": 4})
    batcher, sink = make(analyzer, start=False, max_batch=8, max_queue_delay_ms=5, clock=clock)
    batcher.warm_up(IMAGE, "t")
    assert [size for _, size in analyzer.batches] == [1, 8, *warm_up_sizes(8)]
    assert sorted(batcher.latency.measured()) == [4 * size for size in warm_up_sizes(8)]  # timed as units
    analyzer.batches.clear()
    start = clock()
    for k in range(10):
        assert batcher.submit(request(f"t{k}", "t", deadline_s=0.5, clock=clock))
    batcher.start()
    sink.wait(10)
    verdicts = {f"t{k}": sink.one(f"t{k}") for k in range(10)}
    assert sorted(v.verdict for v in verdicts.values()) == ["OK"] * 2 + ["TIMEOUT"] * 8
    assert analyzer.batches == [("t", 2)] and batcher.shed == 8
    assert all(v.latency_ms.total < 1 for v in verdicts.values() if v.verdict == "TIMEOUT")  # told at once
    assert clock() - start == pytest.approx(0.42)
    assert 2 not in batcher.latency.measured()  # the batch of 2 frames was observed as its 8 units


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


class PoisonedAnalyzer(ScriptedAnalyzer):
    """Fails a whole call when one of its images is the tiny one (what the inspector's preprocessing refuses)
    or the poisoned one (an inference bug), as the real Inspector does for a batch."""

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        from lineguard.runtime.inference.preprocess import ImageFormatError

        if any(image.shape[0] < 8 for image in images):
            self.batches.append((product, len(images)))
            raise ImageFormatError("image (5, 5) is too small to inspect (min 8x8)")
        if any(image is POISON for image in images):
            self.batches.append((product, len(images)))
            raise RuntimeError("kernel crashed")
        return super().analyze(images, product)


POISON = np.ones((16, 16, 3), np.uint8)


def test_a_frame_that_breaks_inference_fails_alone_and_its_batch_mates_get_verdicts(make) -> None:
    analyzer = PoisonedAnalyzer()
    analyzer.gate.clear()
    batcher, sink = make(analyzer, max_batch=8, max_queue_delay_ms=0)
    batcher.submit(request("hold", "x"))
    assert analyzer.entered.wait(5)
    batcher.submit(request("good1"))
    batcher.submit(request("tiny", load=lambda: np.zeros((5, 5, 3), np.uint8)))
    batcher.submit(request("poisoned", load=lambda: POISON))
    batcher.submit(request("good2"))
    analyzer.gate.set()
    sink.wait(5)
    assert sink.one("good1").verdict == sink.one("good2").verdict == "OK"
    assert sink.one("tiny").error.code == ErrorCode.BAD_SHAPE and "too small" in sink.one("tiny").error.message
    assert sink.one("poisoned").error.code == ErrorCode.INTERNAL and "kernel crashed" in sink.one("poisoned").error.message
    # the batch of 4 failed, then each frame ran alone: 2 of them succeeded
    assert analyzer.batches[1:] == [("a", 4), ("a", 1), ("a", 1), ("a", 1), ("a", 1)]


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
    batcher = MicroBatcher(Inspector(enrolled_dir), sink, Batching(max_batch=4, max_queue_delay_ms=20)).start()
    try:
        for i, part in enumerate(weave_parts[4:8]):
            batcher.submit(FrameRequest("cam0", f"p{i}", "weave", time.monotonic() + 30, load=lambda p=part: p))
        sink.wait(4, timeout_s=30)
    finally:
        batcher.close()
    verdicts = [sink.one(f"p{i}") for i in range(4)]
    assert [v.verdict for v in verdicts] == ["OK"] * 4
    assert all(v.decided_by == "few-shot" and v.bundle_id and v.latency_ms.encoder > 0 for v in verdicts)


# -- the sink: archived before published, on the archive's own writer thread --------------------------------

class NgAnalyzer(ScriptedAnalyzer):
    """Every frame whose id (via its image's first pixel) is odd is NG; the rest OK."""

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        return [replace(result, ng=bool(image[0, 0, 0] % 2))
                for result, image in zip(super().analyze(images, product), images, strict=True)]


def pixels(value: int) -> Callable[[], np.ndarray]:
    return lambda: np.full((16, 16, 3), value, np.uint8)


class GatedArchive(FrameArchive):
    """A FrameArchive whose writes wait for ``gate`` (a slow disk), recording the thread that wrote."""

    def __init__(self, root: Path, **options: object) -> None:
        super().__init__(root, max_bytes=10 << 20, **options)
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.threads: set[str] = set()

    def store(self, verdict: Verdict, anomaly_map: np.ndarray, image_rgb: np.ndarray) -> Path | None:
        self.threads.add(threading.current_thread().name)
        self.writing.set()
        assert self.gate.wait(10)
        return super().store(verdict, anomaly_map, image_rgb)


def test_an_ng_verdict_is_published_only_once_its_frame_is_archived(make, tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    found: dict[str, bool] = {}

    def sink(request: FrameRequest, verdict: Verdict) -> None:
        found[request.frame_id] = archive.load(request.camera_id, request.frame_id) is not None

    analyzer = NgAnalyzer()
    analyzer.gate.clear()
    batcher, collector = make(analyzer, max_batch=8, max_queue_delay_ms=0, archive=archive)
    batcher.delivery.sink = lambda r, v: (sink(r, v), collector(r, v))
    batcher.submit(request("hold", load=pixels(0)))
    assert analyzer.entered.wait(5)
    for i in range(6):
        batcher.submit(request(f"f{i}", load=pixels(i)))
    analyzer.gate.set()
    collector.wait(7)
    assert {f: collector.one(f).verdict for f in collector.verdicts} == {
        "hold": "OK", **{f"f{i}": "NG" if i % 2 else "OK" for i in range(6)}}
    assert found == {"hold": False, **{f"f{i}": bool(i % 2) for i in range(6)}}  # NG: in the archive first


def test_archive_writes_run_off_the_inference_thread(make, tmp_path: Path) -> None:
    """A slow disk holds back only the verdicts of frames being archived; the batch's other frames and the
    next batches go on."""
    archive = GatedArchive(tmp_path)
    batcher, sink = make(NgAnalyzer(), max_batch=8, max_queue_delay_ms=20, archive=archive)
    for i in range(4):
        batcher.submit(request(f"a{i}", load=pixels(i)))
    sink.wait(2)  # the OK frames, while the NG ones wait on the disk
    assert archive.writing.wait(5)
    batcher.submit(request("next", load=pixels(10)))
    sink.wait(3)
    assert sorted(sink.verdicts) == ["a0", "a2", "next"]
    archive.gate.set()
    sink.wait(5)
    assert sink.one("a1").verdict == sink.one("a3").verdict == "NG"
    assert archive.threads == {"archive-writer"} and archive.failures == 0
    assert batcher.idle


def test_a_full_archive_writer_costs_the_archive_not_the_verdict(make, tmp_path: Path) -> None:
    archive = GatedArchive(tmp_path)
    batcher, sink = make(NgAnalyzer(), max_batch=8, max_queue_delay_ms=0, archive=archive, archive_capacity=1)
    batcher.submit(request("ng1", load=pixels(1)))
    assert archive.writing.wait(5)  # being written (the disk is slow)
    for i in (3, 5):  # one waits for the writer, the next finds no room
        batcher.submit(request(f"ng{i}", load=pixels(i)))
    sink.wait(1)
    assert list(sink.verdicts) == ["ng5"] and sink.one("ng5").verdict == "NG"  # published at once, not kept
    assert archive.failures == 1 and archive.skipped == 1
    archive.gate.set()
    sink.wait(3)
    assert archive.load("cam0", "ng1") is not None and archive.load("cam0", "ng3") is not None
    assert archive.load("cam0", "ng5") is None and archive.failures == 1


def test_a_verdict_waiting_on_the_archive_goes_out_at_its_deadline(make, tmp_path: Path) -> None:
    """The verdict was made in time: a disk slower than the deadline publishes it (not TIMEOUT) at the
    deadline; the frame is still archived afterwards."""
    archive = GatedArchive(tmp_path)
    batcher, sink = make(NgAnalyzer(), max_batch=1, max_queue_delay_ms=0, archive=archive)
    start = time.monotonic()
    batcher.submit(request("ng", deadline_s=0.3, load=pixels(1)))
    sink.wait(1)
    assert 0.25 <= time.monotonic() - start < 2.0
    verdict = sink.one("ng")
    assert verdict.verdict == "NG" and verdict.latency_ms.total < 300
    archive.gate.set()
    wait_until(lambda: archive.load("cam0", "ng") is not None)
    assert len(sink.verdicts["ng"]) == 1 and archive.failures == 0


def test_close_writes_what_waits_on_the_archive(make, tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    batcher, sink = make(NgAnalyzer(), max_batch=4, max_queue_delay_ms=1000, archive=archive)
    for i in range(4):
        batcher.submit(request(f"f{i}", load=pixels(i)))
    batcher.close(timeout_s=5)
    assert {f: sink.one(f).verdict for f in sink.verdicts} == {"f0": "OK", "f1": "NG", "f2": "OK", "f3": "NG"}
    assert archive.load("cam0", "f1") is not None and archive.load("cam0", "f3") is not None


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.005)


# -- the LLM judge: once per batch ----------------------------------------------------------------------

EVIDENCE = ImageEvidence(score_vs_normals=1.8, normals_compared=24, candidates=1)


class EvidenceAnalyzer(KnownLatencyAnalyzer):
    """Every frame comes with the evidence the judge reads."""

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        return [replace(r, evidence=EVIDENCE) for r in super().analyze(images, product)]


class ScriptedJudge:
    """Answers each batch from a script, records every call (and the clock when it was asked)."""

    def __init__(self, clock: FakeClock, answers: list[bool | None], fail: bool = False) -> None:
        self.clock = clock
        self.answers = answers
        self.fail = fail
        self.calls: list[tuple[list[tuple[ImageEvidence, str]], float, float]] = []

    def judge_batch(self, requests: Sequence[tuple[ImageEvidence, str]], timeout_s: float,
                    images: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[bool | None]:
        assert images is not None and len(images) == len(requests)  # the maps go along, for soft grounding
        self.calls.append((list(requests), timeout_s, self.clock()))
        if self.fail:
            raise RuntimeError("the model process is gone")
        return self.answers[: len(requests)]


def judged_batch(make, answers: list[bool | None], products: frozenset[str] = frozenset({"a"}),
                 fail: bool = False) -> tuple[Collector, ScriptedJudge, float]:
    clock = FakeClock()
    judge = ScriptedJudge(clock, answers, fail)
    batcher, sink = make(EvidenceAnalyzer(clock, latency=lambda size: 0.05), start=False, max_batch=4,
                         max_queue_delay_ms=0, clock=clock, judge=JudgePolicy(judge, products))
    start = clock()
    for i, deadline_s in enumerate([0.5, 0.3, 0.4, 0.6]):
        batcher.submit(request(f"f{i}", deadline_s=deadline_s, clock=clock))
    batcher.start()
    sink.wait(4)
    return sink, judge, start


def test_the_judge_is_asked_once_per_batch_within_the_earliest_deadline(make) -> None:
    sink, judge, start = judged_batch(make, [True, False, None, True])
    assert len(judge.calls) == 1
    asked, timeout_s, asked_at = judge.calls[0]
    assert asked == [(EVIDENCE, "a")] * 4
    assert asked_at == pytest.approx(start + 0.05)  # after inference
    assert timeout_s == pytest.approx(start + 0.3 - asked_at - JUDGE_MARGIN_S)  # f1's deadline is the earliest
    verdicts = {f: sink.one(f) for f in ("f1", "f2", "f0", "f3")}  # the batch's order: earliest deadline first
    assert [(v.verdict, v.decided_by) for v in verdicts.values()] == [
        ("NG", "llm"), ("OK", "llm"), ("OK", "few-shot"), ("NG", "llm")]  # None: the vision verdict stands
    assert all(v.latency_ms.total == pytest.approx(50) for v in verdicts.values())


def test_products_the_llm_does_not_decide_are_not_judged(make) -> None:
    sink, judge, _ = judged_batch(make, [True] * 4, products=frozenset({"other"}))
    assert judge.calls == []
    assert {(sink.one(f"f{i}").verdict, sink.one(f"f{i}").decided_by) for i in range(4)} == {("OK", "few-shot")}


def test_a_failing_judge_leaves_the_vision_verdicts(make) -> None:
    sink, judge, _ = judged_batch(make, [], fail=True)
    assert len(judge.calls) == 1
    assert {(sink.one(f"f{i}").verdict, sink.one(f"f{i}").decided_by) for i in range(4)} == {("OK", "few-shot")}


# -- the verdict is made once ---------------------------------------------------------------------------

def test_a_verdict_is_made_once_never_patched(make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids, latency, TIMEOUT, the judge's answer: all decided before the verdict is built; nothing copies or
    changes one on its way to the sink."""
    def patched(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a verdict was patched with model_copy")

    monkeypatch.setattr(Verdict, "model_copy", patched)
    clock = FakeClock()
    judge = ScriptedJudge(clock, [True, None])
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    batcher, sink = make(EvidenceAnalyzer(clock, latency=lambda size: 0.1), start=False, max_batch=4,
                         max_queue_delay_ms=0, clock=clock, judge=JudgePolicy(judge, frozenset({"a"})),
                         archive=archive)
    batcher.submit(request("late", deadline_s=0.05, clock=clock))
    batcher.submit(request("judged", deadline_s=1.0, clock=clock))
    batcher.submit(request("vision", deadline_s=1.0, clock=clock))
    batcher.start()
    sink.wait(3)
    late, judged, vision = sink.one("late"), sink.one("judged"), sink.one("vision")
    assert (late.verdict, late.frame_id) == ("TIMEOUT", "late")  # not judged: its deadline passed in inference
    assert [len(asked) for asked, _, _ in judge.calls] == [2]
    assert (judged.verdict, judged.decided_by, judged.camera_id) == ("NG", "llm", "cam0")
    assert archive.load("cam0", "judged") is not None and (vision.verdict, vision.decided_by) == ("OK", "few-shot")
