"""The batcher's bounded queue: requests in, same-product batches out, doomed frames found early.

Usage::

    queue = BatchQueue(batching, latency, clock, workers=["batcher-worker-0"])
    queue.submit(request)                       # False: full (answer OVERLOADED); BatcherClosed when closing
    batch, doomed = queue.take("batcher-worker-0")   # blocks until a batch is due (None: closed, empty)
    expired, shed = queue.overdue(max_wait_s=0.5)    # the deadline watch: whatever must be TIMEOUT now
    if queue.claim(request):                    # the first answer wins ...
        try: sink(request, verdict)
        finally: queue.delivered()              # ... and ``idle`` counts it until the sink returned

Owns the queue, the set of requests in flight (taken, not answered yet), when each worker is expected to be
free, and the bookkeeping of answers (``done``, ``idle``); batches are planned by
lineguard.runtime.line.batch_plan against the measured latency (lineguard.runtime.line.batch_latency).
Everything here runs under one condition variable; nothing here calls the sink or the inspector.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from lineguard.runtime.line.batch_latency import BatchLatency
from lineguard.runtime.line.batch_plan import hopeless, plan_batch
from lineguard.runtime.line.config import Batching
from lineguard.runtime.line.pending import BatcherClosed, FrameRequest

log = logging.getLogger(__name__)


class BatchQueue:
    def __init__(self, batching: Batching, latency: BatchLatency, clock: Callable[[], float],
                 workers: Sequence[str]) -> None:
        """``workers``: the names of the threads that take batches (each one's expected free time is tracked)."""
        self.batching = batching
        self.latency = latency
        self.shed = 0  # frames answered TIMEOUT at once because no batch could finish them in time
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[FrameRequest] = deque()
        self._in_flight: set[FrameRequest] = set()
        self._delivering = 0  # verdicts handed to the sink right now (neither queued nor in flight)
        self._free_at = dict.fromkeys(workers, 0.0)  # when each worker is expected to be free
        self._closing = False  # no more submits; workers stop waiting for batches to fill
        self._closed = False  # take() and overdue() return None: threads exit

    # -- intake ---------------------------------------------------------------------------------------

    def submit(self, request: FrameRequest) -> bool:
        """Queue a request; False when the queue is full. Raises BatcherClosed once intake stopped."""
        with self._cond:
            if self._closing:
                raise BatcherClosed("the batcher is closing")
            if len(self._queue) >= self.batching.max_queue:
                return False
            request.enqueued = self._clock()
            self._queue.append(request)
            self._cond.notify_all()
        return True

    def stop_intake(self) -> None:
        """Refuse further submits; queued requests are batched without waiting."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def close(self) -> list[FrameRequest]:
        """End take() and overdue(); the requests still without an answer, queued or in flight."""
        with self._cond:
            left = [r for r in [*self._queue, *self._in_flight] if not r.done]
            self._queue.clear()
            self._closed = True
            self._cond.notify_all()
        return left

    def wake(self) -> None:
        """Wake every waiting thread (a worker died: the watch starts its replacement)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """Nothing queued, in inference or being handed to the sink: every verdict has been delivered."""
        with self._cond:
            return not self._queue and not self._in_flight and not self._delivering

    # -- batches --------------------------------------------------------------------------------------

    def take(self, worker: str) -> tuple[list[FrameRequest], list[FrameRequest]] | None:
        """Wait until a batch is due or frames are doomed -> (batch, doomed), either may be empty; None when
        closed, or closing with nothing left. Both lists are in flight until answered."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = self._clock()
                self._free_at[worker] = now
                others = [t for name, t in self._free_at.items() if name != worker]
                b = self.batching
                plan = plan_batch(self._queue, now, self.latency.predict, b.max_batch, b.max_queue_delay_ms / 1e3,
                                  next_free=min(others, default=None), closing=self._closing,
                                  deadline_aware=b.deadline_aware, expect=self.latency.mean)
                if plan.batch or plan.doomed:
                    self._take_out([*plan.batch, *plan.doomed], shed=len(plan.doomed))
                    if plan.busy_until is not None:
                        self._free_at[worker] = plan.busy_until
                    if plan.probe:
                        log.debug("latency model says a lone frame takes %.0f ms, more than frame %s/%s may wait: "
                                  "running it to measure again", (self.latency.mean(plan.batch[0].units) or 0.0) * 1e3,
                                  plan.batch[0].camera_id, plan.batch[0].frame_id)
                    return plan.batch, plan.doomed
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                self._cond.wait(None if plan.wake_at is None else max(0.0, plan.wake_at - now))

    def overdue(self, max_wait_s: float = 0.5) -> tuple[list[FrameRequest], list[FrameRequest]] | None:
        """For the deadline watch: (expired, shed) once a request's deadline passed (queued or in flight) or a
        queued frame can no longer make it after the busy workers; both empty after ``max_wait_s`` (or a
        wake) without any; None once closed. Every request returned is in flight until answered."""
        with self._cond:
            if self._closed:
                return None
            now = self._clock()
            pending = [r for r in [*self._queue, *self._in_flight] if not r.done]
            expired = [r for r in pending if r.deadline <= now]
            shed: list[FrameRequest] = []
            if self.batching.deadline_aware and self._queue:
                free = min((max(now, t) for t in self._free_at.values()), default=now)
                shed = [r for r in hopeless(self._queue, free, self.latency.mean) if r.deadline > now]
            if expired or shed:
                self._take_out([*expired, *shed], shed=len(shed))
                return expired, shed
            wait = min((r.deadline for r in pending), default=now + max_wait_s) - now
            self._cond.wait(min(max(wait, 0.0), max_wait_s))
            return [], []

    def _take_out(self, requests: list[FrameRequest], shed: int) -> None:
        """Under the lock: move requests from the queue to in flight."""
        gone = set(requests)
        self._queue = deque(r for r in self._queue if r not in gone)
        self._in_flight.update(gone)
        self.shed += shed

    # -- answers --------------------------------------------------------------------------------------

    def claim(self, request: FrameRequest) -> bool:
        """Mark a request answered; False when it already was (the first answer wins). After True, call
        :meth:`delivered` once the verdict has been handed to the sink."""
        with self._cond:
            if request.done:
                return False
            request.done = True
            self._in_flight.discard(request)
            self._delivering += 1
            return True

    def delivered(self) -> None:
        with self._cond:
            self._delivering -= 1
            self._cond.notify_all()

    def wait_delivered(self, timeout_s: float) -> None:
        """Wait until no verdict is being handed to the sink (a worker may be inside it right now)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._delivering, timeout=timeout_s)
