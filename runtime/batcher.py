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

How a batch forms (Triton's dynamic batching): the oldest waiting request names the product; the batch
takes up to ``max_batch`` waiting requests of that product, as soon as there are that many or once the
oldest has waited ``max_queue_delay_ms``. Requests of other products keep their place in the queue.

Deadlines: a watch thread answers TIMEOUT the moment a request's deadline passes, whether it is still
queued or already in inference (a late inference result is then discarded): a PLC's result window does
not stretch for a slow batch. Load shedding: once a batch's inference time is known (an EWMA), a queued
request that its place in the queue would bring past its deadline is answered TIMEOUT at once instead of
being inferred in vain, so under overload the workers spend their time on frames that can still make it
(the next batch always runs, which keeps the estimate current). Decoding (``request.load``) runs on the inference worker, off the
caller's thread; a FrameError there answers that request alone with its code. An exception from
inference answers each frame of the batch ERROR/INTERNAL (UNKNOWN_PRODUCT for an unknown product).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lineguard.runtime.archive import FrameArchive
from lineguard.runtime.inspector import Inspection, UnknownProductError
from lineguard.runtime.llm_judge import LlmJudge
from lineguard.runtime.messages import Verdict
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
    deadline: float  # time.monotonic() seconds
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
    ) -> None:
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
        self._cond = threading.Condition()
        self._queue: deque[FrameRequest] = deque()
        self._in_flight: set[FrameRequest] = set()
        self._delivering = 0  # verdicts handed to the sink right now (neither queued nor in flight)
        self._workers: list[threading.Thread] = [self._thread(self._work, f"batcher-worker-{i}") for i in range(workers)]
        self.worker_restarts = 0  # workers that died and were replaced
        self._watch = self._thread(self._watch_deadlines, "batcher-deadlines")
        self._closing = False  # no more submits; workers stop waiting for batches to fill
        self._closed = False  # threads exit
        self._started = False
        self._batch_seconds: float | None = None  # recent inference time of one batch (None: not measured yet)

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

    def submit(self, request: FrameRequest) -> bool:
        """Queue a request; False when the queue is full (answer it OVERLOADED). Raises BatcherClosed."""
        with self._cond:
            if self._closing:
                raise BatcherClosed("the batcher is closing")
            if len(self._queue) >= self.max_queue:
                return False
            request.enqueued = time.monotonic()
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
        end = time.monotonic() + timeout_s
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
        verdict.latency_ms.total = (time.monotonic() - request.received) * 1e3
        return verdict

    def _timeout(self, request: FrameRequest, why: str) -> Verdict:
        latency = (time.monotonic() - request.received) * 1e3
        log.debug("TIMEOUT %s/%s after %.1f ms: %s", request.camera_id, request.frame_id, latency, why)
        verdict = Verdict(frame_id=request.frame_id, camera_id=request.camera_id, product=request.product or "",
                          verdict="TIMEOUT", bundle_id=self.bundle_id)
        verdict.latency_ms.total = latency
        return verdict

    def _shed_doomed(self, now: float) -> list[FrameRequest]:
        """Under the lock: take out queued frames that cannot be inferred before their deadline.

        Load shedding: under overload the oldest frames would otherwise be inferred only to miss their
        deadline, and the frames behind them would miss theirs too (useful throughput collapses). A frame
        whose place in the queue puts its inference end (``batches ahead + 1`` times a batch's recent
        inference time, spread over the workers) past its deadline is answered TIMEOUT at once. The
        next batch (the first ``max_batch`` frames) is never shed: it always runs, so the estimate is
        measured again every cycle and one slow batch cannot shut the line out.
        """
        if self._batch_seconds is None or self._closing:
            return []
        per_round = self.max_batch * max(1, len(self._workers))
        doomed: list[FrameRequest] = []
        ahead = 0  # frames that will be inferred before this one
        for r in self._queue:
            if ahead >= self.max_batch and now + self._batch_seconds * (ahead // per_round + 1) > r.deadline:
                doomed.append(r)
            else:
                ahead += 1
        if doomed:
            gone = set(doomed)
            self._queue = deque(r for r in self._queue if r not in gone)
            self._in_flight.update(doomed)
        return doomed

    def _next_batch(self) -> tuple[list[FrameRequest], list[FrameRequest]] | None:
        """Under the lock: wait for a batch to be due -> (batch, frames shed as doomed); None when closing
        and nothing is left."""
        while True:
            if self._closed:
                return None
            doomed = self._shed_doomed(time.monotonic())
            if doomed:
                return [], doomed
            if not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            head = self._queue[0]
            same = [r for r in self._queue if r.product == head.product][: self.max_batch]
            due = head.enqueued + self.max_queue_delay
            now = time.monotonic()
            if len(same) >= self.max_batch or now >= due or self._closing:
                taken = set(same)
                self._queue = deque(r for r in self._queue if r not in taken)
                self._in_flight.update(same)
                return same, []
            self._cond.wait(due - now)

    def _work(self) -> None:
        while True:
            with self._cond:
                taken = self._next_batch()
            if taken is None:
                return
            batch, doomed = taken
            for r in doomed:
                left_ms = (r.deadline - time.monotonic()) * 1e3
                self._finish(r, self._timeout(r, f"shed: {left_ms:.0f} ms left, inference takes "
                                                 f"~{(self._batch_seconds or 0.0) * 1e3:.0f} ms"))
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
        live: list[tuple[FrameRequest, np.ndarray, float]] = []
        for r in batch:
            if r.done:  # the deadline watch answered it already
                continue
            if time.monotonic() >= r.deadline:
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
        started = time.monotonic()
        try:
            results = self.inspector.analyze([image for _, image, _ in live], product)
            took = time.monotonic() - started
            with self._cond:  # recent inference time, for load shedding (EWMA: follows load changes)
                self._batch_seconds = took if self._batch_seconds is None else 0.7 * self._batch_seconds + 0.3 * took
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
            now = time.monotonic()
            latency = result.verdict.latency_ms.model_copy(
                update={"decode": decode_ms, "total": (now - r.received) * 1e3})
            verdict = result.verdict.model_copy(
                update={"frame_id": r.frame_id, "camera_id": r.camera_id, "latency_ms": latency})
            if now >= r.deadline:
                verdict = verdict.model_copy(update={"verdict": "TIMEOUT"})
            if self.judge is not None and r.product in self.judged_products:
                verdict = self.judge.decide(verdict, timeout_s=max(0.0, r.deadline - time.monotonic() - 0.005))
                verdict.latency_ms.total = (time.monotonic() - r.received) * 1e3
            # archived before the verdict goes out, so any frame a client has a verdict for can be explained
            # (costs an NG frame ~3 ms of PNG encoding; a failing disk is counted, never raised)
            if self.archive is not None and verdict.verdict in ("OK", "NG") and self.archive.wants(verdict):
                self.archive.store(verdict, result.anomaly_map, result.model_rgb)
            self._finish(r, verdict)

    def _watch_deadlines(self) -> None:
        """Answer TIMEOUT at the deadline, queued or in flight; restart a worker that died."""
        while True:
            with self._cond:
                if self._closed:
                    return
                self._revive_workers()
                now = time.monotonic()
                pending = [r for r in [*self._queue, *self._in_flight] if not r.done]
                expired = [r for r in pending if r.deadline <= now]
                if expired:
                    gone = set(expired)
                    self._queue = deque(r for r in self._queue if r not in gone)
                else:
                    wait = min((r.deadline for r in pending), default=now + 0.5) - now
                    self._cond.wait(min(max(wait, 0.0), 0.5))
                    continue
            for r in expired:
                self._finish(r, self._timeout(r, "deadline passed"))

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
