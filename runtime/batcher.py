"""Dynamic micro-batching in front of the Inspector, with deadlines; every accepted request gets one verdict.

Usage::

    import time, cv2
    from lineguard.runtime import Inspector
    from lineguard.runtime.batcher import FrameRequest, MicroBatcher

    def publish(request, verdict):            # called once per request, from a batcher thread
        print(request.frame_id, verdict.verdict)

    batcher = MicroBatcher(Inspector("bundles/default"), publish, max_batch=8, max_queue_delay_ms=5)
    batcher.start()
    image = cv2.imread("part.png")
    accepted = batcher.submit(FrameRequest("cam0", "f1", "tile", deadline=time.monotonic() + 0.2,
                                           load=lambda: image))
    if not accepted:
        ...                                  # queue full: answer OVERLOADED yourself
    batcher.close(timeout_s=2.0)             # drains: queued frames are inspected or TIMEOUT

A service calls ``batcher.warm_up(image, product)`` for each product before ``start()``: it runs the
models once (lazy set-up) and times a few batch sizes, the latency model's first estimates.

How a batch forms: the oldest waiting request names the product, and the batch holds requests of that
product only (others keep their place in the queue). With ``deadline_aware`` (the default) batches are
planned against this machine's measured batch latency (lineguard.runtime.batch_latency: timed at
:meth:`MicroBatcher.warm_up`, then an EWMA per batch size from every batch run) by
lineguard.runtime.batch_plan: a batch is only formed if it can finish before its earliest deadline; of
the frames queued, the largest batch that can still make it runs (newest frames first once the queue is
late), and a frame that can no longer make its deadline is answered TIMEOUT at once, without inference.
So a burst beyond capacity is judged as far as deadline x capacity allows and the line is on time again
as soon as the burst's batch ends. A batch is due once full, once deadlines cap its size, once the oldest
has waited ``max_queue_delay_ms``, or once waiting longer would make it late. Without ``deadline_aware``
it is Triton's plain dynamic batching (up to ``max_batch`` once full or after the queue delay).

Deadlines: a watch thread answers TIMEOUT the moment a request's deadline passes, whether it is still
queued or already in inference (a late inference result is then discarded): a PLC's result window does
not stretch for a slow batch. Decoding (``request.load``) runs on the inference worker, off the caller's
thread, and counts as part of a batch's latency; a FrameError there answers that request alone with its
code. An exception from inference answers each frame of the batch ERROR/INTERNAL (UNKNOWN_PRODUCT for an
unknown product).

Supervision: a fault that kills a worker outright (a BaseException escaping inference, e.g. a
``MemoryError``-style abort or an injected fault) answers every frame of its batch ERROR/WORKER_FAILED
that has no verdict yet; the worker ends, the deadline watch starts a replacement at once and counts
it (``worker_restarts``), and the pool keeps serving. Only a crash of the whole process (a native
segfault) is beyond this: then the service's supervisor (systemd, the container runtime) restarts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lineguard.runtime.archive import FrameArchive
from lineguard.runtime.batch_latency import BatchLatency, warm_up_sizes
from lineguard.runtime.batch_plan import hopeless, plan_batch
from lineguard.runtime.inspector import Inspection, UnknownProductError
from lineguard.runtime.llm_judge import LlmJudge
from lineguard.runtime.messages import Verdict
from lineguard.runtime.region_evidence import with_scale
from lineguard.runtime.wire import ErrorCode, FrameError, FrameIds, error_verdict

log = logging.getLogger(__name__)


class Analyzer(Protocol):
    """What the batcher needs of an Inspector."""

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]: ...


class BatcherClosed(RuntimeError):
    """submit() after close(): the service is shutting down."""


@dataclass(eq=False)
class FrameRequest:
    """One frame waiting for a verdict. ``load`` returns its pixels (it may raise FrameError)."""

    camera_id: str
    frame_id: str
    product: str | None
    deadline: float  # seconds of the batcher's clock (time.monotonic unless one is injected)
    load: Callable[[], np.ndarray]
    received: float = field(default_factory=time.monotonic)
    context: Any = None  # whatever the caller needs to deliver the verdict (e.g. a ROUTER envelope)
    enqueued: float = 0.0
    done: bool = False

    @property
    def ids(self) -> FrameIds:
        return FrameIds(self.camera_id, self.frame_id, self.product or "")


VerdictSink = Callable[[FrameRequest, Verdict], None]


class MicroBatcher:
    """Bounded queue -> same-product batches -> ``analyze`` on worker threads -> ``sink(request, verdict)``.

    ``sink`` is called exactly once per accepted request, from a batcher thread; keep it short and
    thread-safe (hand the verdict to the thread that owns the sockets).
    """

    def __init__(
        self,
        inspector: Analyzer,
        sink: VerdictSink,
        max_batch: int = 8,
        max_queue_delay_ms: float = 5.0,
        max_queue: int = 64,
        workers: int = 1,
        bundle_id: str | None = None,
        archive: FrameArchive | None = None,
        judge: LlmJudge | None = None,
        judged_products: frozenset[str] = frozenset(),
        deadline_aware: bool = True,
        mm_per_pixel: Mapping[str, float] | None = None,
        margin_deviations: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is the one all times are read from (requests' deadlines included): tests inject one."""
        if max_batch < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be at least 1")
        self.inspector = inspector
        self.sink = sink
        self.max_batch = max_batch
        self.max_queue_delay = max_queue_delay_ms / 1e3
        self.max_queue = max_queue
        if bundle_id is None:
            bundle = getattr(inspector, "bundle", None)
            bundle_id = bundle.manifest.bundle_id if bundle is not None else ""
        self.bundle_id = bundle_id
        self.archive = archive
        self.judge = judge  # AnomalyGPT's yes/no decision for judged_products, within each frame's deadline
        self.judged_products = judged_products
        self.mm_per_pixel = dict(mm_per_pixel or {})  # camera id -> pixel scale, for region sizes in mm
        self.deadline_aware = deadline_aware
        self.latency = BatchLatency(margin_deviations)  # seconds per batch size on this machine
        self.shed = 0  # frames answered TIMEOUT at once because no batch could finish them in time
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[FrameRequest] = deque()
        self._in_flight: set[FrameRequest] = set()
        self._delivering = 0  # verdicts handed to the sink right now (neither queued nor in flight)
        self._workers: list[threading.Thread] = [self._thread(self._work, f"batcher-worker-{i}") for i in range(workers)]
        self._free_at = {t.name: 0.0 for t in self._workers}  # when each worker is expected to be free
        self.worker_restarts = 0  # workers that died and were replaced
        self._watch = self._thread(self._watch_deadlines, "batcher-deadlines")
        self._closing = False  # no more submits; workers stop waiting for batches to fill
        self._closed = False  # threads exit
        self._started = False

    @staticmethod
    def _thread(target: Callable[[], None], name: str) -> threading.Thread:
        return threading.Thread(target=target, name=name, daemon=True)

    # -- public -------------------------------------------------------------------------------------

    def start(self) -> MicroBatcher:
        with self._cond:
            if self._started:
                return self
            self._started = True
        for t in [*self._workers, self._watch]:
            t.start()
        return self

    def warm_up(self, image: np.ndarray, product: str | None) -> None:
        """Run ``product`` at batch 1 and at max_batch (lazy set-up: allocations, an execution provider's
        engine build), then time the sizes of :func:`warm_up_sizes` not timed yet: the latency model's
        first estimates. Before ``start()``; raises what ``analyze`` raises (e.g. UnknownProductError)."""
        for size in sorted({1, self.max_batch}):
            self.inspector.analyze([image] * size, product)
        measured = self.latency.measured()
        for size in warm_up_sizes(self.max_batch):
            if size in measured:
                continue
            started = self._clock()
            self.inspector.analyze([image] * size, product)
            self.latency.observe(size, self._clock() - started)

    def submit(self, request: FrameRequest) -> bool:
        """Queue a request; False when the queue is full (answer it OVERLOADED). Raises BatcherClosed."""
        with self._cond:
            if self._closing:
                raise BatcherClosed("the batcher is closing")
            if len(self._queue) >= self.max_queue:
                return False
            request.enqueued = self._clock()
            self._queue.append(request)
            self._cond.notify_all()
        return True

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def workers_alive(self) -> int:
        """Inference threads running now (all of them once started, unless one just died)."""
        return sum(t.is_alive() for t in self._workers)

    @property
    def idle(self) -> bool:
        """Nothing queued, in inference or being handed to the sink: every verdict has been delivered."""
        with self._cond:
            return not self._queue and not self._in_flight and not self._delivering

    def stop_intake(self) -> None:
        """Refuse further submits (BatcherClosed); queued requests are batched without waiting."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop intake and drain: queued requests are still inspected (or TIMEOUT at their deadline).

        Whatever has no verdict after ``timeout_s`` is answered TIMEOUT now; a worker stuck in inference
        is left behind (daemon thread) and its late results are discarded.
        """
        self.stop_intake()
        end = time.monotonic() + timeout_s  # real time, whatever the clock
        if self._started:
            for t in self._workers:
                t.join(max(0.0, end - time.monotonic()))
        with self._cond:
            left = [r for r in [*self._queue, *self._in_flight] if not r.done]
            self._queue.clear()
            self._closed = True
            self._cond.notify_all()
        for r in left:
            self._finish(r, self._timeout(r, "not inspected before the service stopped"))
        with self._cond:  # a worker may be inside the sink this very moment: let it finish
            self._cond.wait_for(lambda: not self._delivering, timeout=1.0)
        if self._started:
            self._watch.join(1.0)

    # -- internals ----------------------------------------------------------------------------------

    def _finish(self, request: FrameRequest, verdict: Verdict) -> None:
        """Deliver a request's verdict unless it already has one (first answer wins)."""
        with self._cond:
            if request.done:
                return
            request.done = True
            self._in_flight.discard(request)
            self._delivering += 1
        try:
            self.sink(request, verdict)
        except Exception:  # a sink bug must not kill the worker or lose the other verdicts
            log.exception("verdict sink failed for frame %s/%s", request.camera_id, request.frame_id)
        finally:
            with self._cond:
                self._delivering -= 1
                self._cond.notify_all()

    def _error(self, request: FrameRequest, code: ErrorCode, message: str) -> Verdict:
        verdict = error_verdict(request.ids, code, message, self.bundle_id)
        verdict.latency_ms.total = (self._clock() - request.received) * 1e3
        return verdict

    def _timeout(self, request: FrameRequest, why: str) -> Verdict:
        latency = (self._clock() - request.received) * 1e3
        log.debug("TIMEOUT %s/%s after %.1f ms: %s", request.camera_id, request.frame_id, latency, why)
        verdict = Verdict(frame_id=request.frame_id, camera_id=request.camera_id, product=request.product or "",
                          verdict="TIMEOUT", bundle_id=self.bundle_id)
        verdict.latency_ms.total = latency
        return verdict

    def _next_batch(self) -> tuple[list[FrameRequest], list[FrameRequest]] | None:
        """Under the lock: wait until a batch is due or frames are doomed -> (batch, doomed), either may be
        empty; None when closing and nothing is left. Planning: lineguard.runtime.batch_plan."""
        me = threading.current_thread().name
        while True:
            if self._closed:
                return None
            now = self._clock()
            self._free_at[me] = now
            others = [t for name, t in self._free_at.items() if name != me]
            plan = plan_batch(self._queue, now, self.latency.predict, self.max_batch, self.max_queue_delay,
                              next_free=min(others, default=None), closing=self._closing,
                              deadline_aware=self.deadline_aware, expect=self.latency.mean)
            if plan.batch or plan.doomed:
                gone = {*plan.batch, *plan.doomed}
                self._queue = deque(r for r in self._queue if r not in gone)
                self._in_flight.update(gone)
                self.shed += len(plan.doomed)
                if plan.busy_until is not None:
                    self._free_at[me] = plan.busy_until
                if plan.probe:
                    log.debug("latency model says a lone frame takes %.0f ms, more than frame %s/%s may wait: "
                             "running it to measure again", (self.latency.mean(1) or 0.0) * 1e3,
                             plan.batch[0].camera_id, plan.batch[0].frame_id)
                return plan.batch, plan.doomed
            if not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            self._cond.wait(None if plan.wake_at is None else max(0.0, plan.wake_at - now))

    def _work(self) -> None:
        while True:
            with self._cond:
                taken = self._next_batch()
            if taken is None:
                return
            batch, doomed = taken
            for r in doomed:
                left_ms = (r.deadline - self._clock()) * 1e3
                self._finish(r, self._timeout(r, f"shed: {left_ms:.0f} ms left; no batch can finish it in "
                                                 f"time (a lone frame: ~{(self.latency.mean(1) or 0) * 1e3:.0f} ms)"))
            if not batch:
                continue
            try:
                self._run(batch)
            except Exception as exc:  # a bug outside inference: never lose frames to it; keep working
                log.exception("batch of %d frames failed", len(batch))
                for r in batch:
                    self._finish(r, self._error(r, ErrorCode.INTERNAL, f"worker failed: {exc!r}"))
            except BaseException as exc:  # the worker is being killed: answer its batch, then end
                log.critical("inference worker %s killed mid-batch by %r; its %d frames are answered "
                             "WORKER_FAILED and a new worker takes over", threading.current_thread().name,
                             exc, len(batch))
                for r in batch:
                    self._finish(r, self._error(r, ErrorCode.WORKER_FAILED, f"inference worker died: {exc!r}"))
                with self._cond:
                    self._cond.notify_all()  # wake the watch: it starts the replacement
                return

    def _run(self, batch: list[FrameRequest]) -> None:
        started = self._clock()  # a batch's latency: decoding and inference
        live: list[tuple[FrameRequest, np.ndarray, float]] = []
        for r in batch:
            if r.done:  # the deadline watch answered it already
                continue
            if self._clock() >= r.deadline:
                self._finish(r, self._timeout(r, "deadline passed in the queue"))
                continue
            t0 = time.perf_counter()
            try:
                image = r.load()
            except FrameError as exc:
                self._finish(r, self._error(r, exc.code, exc.message))
                continue
            except Exception as exc:
                self._finish(r, self._error(r, ErrorCode.INTERNAL, f"decode failed: {exc!r}"))
                continue
            live.append((r, image, (time.perf_counter() - t0) * 1e3))
        if not live:
            return
        product = live[0][0].product
        try:
            results = self.inspector.analyze([image for _, image, _ in live], product)
            self.latency.observe(len(live), self._clock() - started)
            if len(results) != len(live):
                raise RuntimeError(f"analyze returned {len(results)} results for {len(live)} images")
        except UnknownProductError as exc:
            for r, _, _ in live:
                self._finish(r, self._error(r, ErrorCode.UNKNOWN_PRODUCT, str(exc)))
            return
        except Exception as exc:
            log.exception("inference failed for a batch of %d %s frames", len(live), product)
            for r, _, _ in live:
                self._finish(r, self._error(r, ErrorCode.INTERNAL, f"inference failed: {exc!r}"))
            return
        for (r, _, decode_ms), result in zip(live, results, strict=True):
            now = self._clock()
            latency = result.verdict.latency_ms.model_copy(
                update={"decode": decode_ms, "total": (now - r.received) * 1e3})
            verdict = result.verdict.model_copy(
                update={"frame_id": r.frame_id, "camera_id": r.camera_id, "latency_ms": latency})
            if now >= r.deadline:
                verdict = verdict.model_copy(update={"verdict": "TIMEOUT"})
            verdict = with_scale(verdict, self.mm_per_pixel.get(r.camera_id))
            if self.judge is not None and r.product in self.judged_products:
                verdict = self.judge.decide(verdict, timeout_s=max(0.0, r.deadline - self._clock() - 0.005),
                                            evidence=result.evidence)
                verdict.latency_ms.total = (self._clock() - r.received) * 1e3
            # archived before the verdict goes out, so any frame a client has a verdict for can be explained
            # (costs an NG frame ~3 ms of PNG encoding; a failing disk is counted, never raised)
            if self.archive is not None and verdict.verdict in ("OK", "NG") and self.archive.wants(verdict):
                self.archive.store(verdict, result.anomaly_map, result.model_rgb)
            self._finish(r, verdict)

    def _watch_deadlines(self) -> None:
        """Answer TIMEOUT at the deadline, queued or in flight, and at once for a queued frame that cannot
        make it after the busy workers (woken by every submit); restart a worker that died."""
        while True:
            with self._cond:
                if self._closed:
                    return
                self._revive_workers()
                now = self._clock()
                pending = [r for r in [*self._queue, *self._in_flight] if not r.done]
                expired = [r for r in pending if r.deadline <= now]
                shed: list[FrameRequest] = []
                if self.deadline_aware and self._queue:
                    free = min((max(now, t) for t in self._free_at.values()), default=now)
                    shed = [r for r in hopeless(self._queue, free, self.latency.mean) if r.deadline > now]
                if expired or shed:
                    gone = {*expired, *shed}
                    self._queue = deque(r for r in self._queue if r not in gone)
                    self._in_flight.update(gone)
                    self.shed += len(shed)
                else:
                    wait = min((r.deadline for r in pending), default=now + 0.5) - now
                    self._cond.wait(min(max(wait, 0.0), 0.5))
                    continue
            for r in expired:
                self._finish(r, self._timeout(r, "deadline passed"))
            for r in shed:
                left_ms = (r.deadline - now) * 1e3
                self._finish(r, self._timeout(r, f"shed on arrival: {left_ms:.0f} ms left, not enough after the "
                                                 "batches in inference"))

    def _revive_workers(self) -> None:
        """Under the lock: replace every worker thread that has ended (it died: workers only end at close)."""
        if self._closing or not self._started:
            return
        for i, t in enumerate(self._workers):
            if not t.is_alive():
                log.error("batcher worker %s died; starting a new one", t.name)
                self._workers[i] = self._thread(self._work, t.name)
                self._workers[i].start()
                self.worker_restarts += 1
