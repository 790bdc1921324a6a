"""Dynamic micro-batching in front of the Inspector, with deadlines; every accepted request gets one verdict.

Usage::

    import time, cv2
    from lineguard.runtime import Inspector
    from lineguard.runtime.line.batcher import FrameRequest, MicroBatcher
    from lineguard.runtime.line.config import Batching

    def publish(request, verdict):            # called once per request, from a batcher thread
        print(request.frame_id, verdict.verdict)

    batcher = MicroBatcher(Inspector("bundles/default"), publish, Batching(max_batch=8, max_queue_delay_ms=5))
    batcher.start()
    image = cv2.imread("part.png")
    accepted = batcher.submit(FrameRequest("cam0", "f1", "tile", deadline=time.monotonic() + 0.2,
                                           load=lambda: image))
    if not accepted:
        ...                                  # queue full: answer OVERLOADED yourself
    batcher.close(timeout_s=2.0)             # drains: queued frames are inspected or TIMEOUT

A service calls ``batcher.warm_up(image, product)`` for each product before ``start()``: it runs the
models once (lazy set-up) and times a few batch sizes, the latency model's first estimates.

This module owns the wiring of the pipeline, the rule for a worker's faults and the deadline watch; the
parts are each in a module of their own:

* queue -> batch (lineguard.runtime.line.batch_queue): the bounded queue; the oldest waiting request names
  the product, and a batch holds requests of that product only. With ``deadline_aware`` (the default)
  batches are planned against this machine's measured batch latency (lineguard.runtime.line.batch_latency:
  timed at :meth:`MicroBatcher.warm_up`, then an EWMA per batch size from every batch run; sizes count
  frames inspected whole, so a frame of a product inspected as n x n tiles counts n², which the inspector's
  ``frame_units`` tells on submit) by
  lineguard.runtime.line.batch_plan: a batch only forms if it can finish before its earliest deadline, and a
  frame that can no longer make its deadline is answered TIMEOUT at once, without inference. Without
  ``deadline_aware`` it is Triton's plain dynamic batching (up to ``max_batch`` once full or after the queue
  delay).
* analyze (lineguard.runtime.line.analyze): decode (on the worker, counted in the batch's latency; a
  FrameError answers that frame alone), one ``analyze`` call, one LLM judge call for the batch (products in
  ``llm_verdict``), each verdict made once.
* sink (lineguard.runtime.line.sink): one verdict per request, the first answer wins; a frame the archive
  keeps is written by the archive's writer thread and its verdict published right after.

Deadlines: a watch thread answers TIMEOUT the moment a request's deadline passes, whether it is still
queued or already in inference (a late inference result is then discarded): a PLC's result window does
not stretch for a slow batch. An exception from inference answers each frame of the batch ERROR/INTERNAL
(UNKNOWN_PRODUCT for an unknown product).

Supervision (lineguard.runtime.line.workers): a fault that kills a worker outright (a BaseException escaping
inference, e.g. a ``MemoryError``-style abort or an injected fault) answers every frame of its batch
ERROR/WORKER_FAILED that has no verdict yet; the worker ends, the deadline watch starts a replacement at once
and counts it (``worker_restarts``), and the pool keeps serving. Only a crash of the whole process (a native
segfault) is beyond this: then the service's supervisor (systemd, the container runtime) restarts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from lineguard.runtime.contract import ErrorCode
from lineguard.runtime.line.analyze import Analyzer, AnalyzeStep, JudgePolicy
from lineguard.runtime.line.archive import ArchiveWriter, FrameArchive
from lineguard.runtime.line.batch_latency import BatchLatency, warm_up_sizes
from lineguard.runtime.line.batch_queue import BatchQueue
from lineguard.runtime.line.config import Batching, CameraConfig
from lineguard.runtime.line.pending import BatcherClosed, FrameRequest
from lineguard.runtime.line.sink import Delivery, VerdictSink
from lineguard.runtime.line.workers import WorkerPool

__all__ = ["ARCHIVE_CAPACITY", "BatcherClosed", "FrameRequest", "MicroBatcher", "VerdictSink"]

log = logging.getLogger(__name__)

ARCHIVE_CAPACITY = 32  # frames the archive writer holds; beyond it a frame is not kept (an archive failure)


class MicroBatcher:
    """Bounded queue -> same-product batches -> ``analyze`` on worker threads -> ``sink(request, verdict)``.

    ``sink`` is called exactly once per accepted request, from a batcher thread (or the archive writer's);
    keep it short and thread-safe (hand the verdict to the thread that owns the sockets).
    """

    def __init__(
        self,
        inspector: Analyzer,
        sink: VerdictSink,
        batching: Batching | None = None,
        *,
        bundle_id: str | None = None,
        archive: FrameArchive | None = None,
        archive_capacity: int = ARCHIVE_CAPACITY,
        judge: JudgePolicy | None = None,
        cameras: Mapping[str, CameraConfig] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``batching``: the line's ``batching`` section; ``judge``: the LLM judge and the products it decides;
        ``cameras``: the line's cameras (pixel scale); ``clock``: the one all times are read from (requests'
        deadlines included): tests inject one."""
        self.inspector = inspector
        self.batching = batching or Batching()
        if bundle_id is None:
            bundle = getattr(inspector, "bundle", None)
            bundle_id = bundle.manifest.bundle_id if bundle is not None else ""
        self.bundle_id = bundle_id
        self.archive = archive
        self.latency = BatchLatency(self.batching.latency_margin_deviations)  # seconds per batch size here
        self._clock = clock
        self.workers = WorkerPool(self.batching.workers, self._work)
        self.queue = BatchQueue(self.batching, self.latency, clock, self.workers.names)
        self.writer = ArchiveWriter(archive, archive_capacity) if archive is not None else None
        self.step = AnalyzeStep(inspector, self.latency, bundle_id, judge, cameras, clock)
        self.delivery = Delivery(self.queue, sink, bundle_id, clock, self.writer)
        self._watch = threading.Thread(target=self._watch_deadlines, name="batcher-deadlines", daemon=True)
        self._started = False

    # -- public -------------------------------------------------------------------------------------

    def start(self) -> MicroBatcher:
        if self._started:
            return self
        self._started = True
        if self.writer is not None:
            self.writer.start()
        self.workers.start()
        self._watch.start()
        return self

    def warm_up(self, image: np.ndarray, product: str | None) -> None:
        """Run ``product`` at batch 1 and at max_batch (lazy set-up: allocations, an execution provider's
        engine build), then time the sizes of :func:`warm_up_sizes` not timed yet: the latency model's
        first estimates, in units (a product inspected as tiles times its own: 4 units a frame in 2 x 2).
        Before ``start()``; raises what ``analyze`` raises (e.g. UnknownProductError)."""
        max_batch = self.batching.max_batch
        units = self.inspector.frame_units(product)
        for size in sorted({1, max_batch}):
            self.inspector.analyze([image] * size, product)
        measured = self.latency.measured()
        for size in warm_up_sizes(max_batch):
            if size * units in measured:
                continue
            started = self._clock()
            self.inspector.analyze([image] * size, product)
            self.latency.observe(size * units, self._clock() - started)

    def submit(self, request: FrameRequest) -> bool:
        """Queue a request; False when the queue is full (answer it OVERLOADED). Raises BatcherClosed."""
        request.units = self.inspector.frame_units(request.product)  # what planning counts it as
        return self.queue.submit(request)

    @property
    def max_queue(self) -> int:
        return self.batching.max_queue

    @property
    def queued(self) -> int:
        return self.queue.queued

    @property
    def in_flight(self) -> int:
        return self.queue.in_flight

    @property
    def shed(self) -> int:
        """Frames answered TIMEOUT at once because no batch could finish them in time."""
        return self.queue.shed

    @property
    def workers_alive(self) -> int:
        """Inference threads running now (all of them once started, unless one just died)."""
        return self.workers.alive

    @property
    def worker_restarts(self) -> int:
        """Workers that died and were replaced."""
        return self.workers.restarts

    @property
    def idle(self) -> bool:
        """Nothing queued, in inference, waiting on the archive or being handed to the sink."""
        return self.queue.idle

    def stop_intake(self) -> None:
        """Refuse further submits (BatcherClosed); queued requests are batched without waiting."""
        self.workers.stop_reviving()
        self.queue.stop_intake()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop intake and drain: queued requests are still inspected (or TIMEOUT at their deadline), frames
        waiting on the archive written and published.

        Whatever has no verdict after ``timeout_s`` is answered now (TIMEOUT, or its verdict unarchived); a
        worker stuck in inference is left behind (daemon thread) and its late results are discarded.
        """
        self.stop_intake()
        end = time.monotonic() + timeout_s  # real time, whatever the clock
        self.workers.join(end)
        if self.writer is not None:
            self.writer.close(max(0.0, end - time.monotonic()))
        for r in self.queue.close():
            self.delivery.expire(r, "not inspected before the service stopped")
        self.queue.wait_delivered(timeout_s=1.0)  # a worker may be inside the sink this very moment
        if self._started:
            self._watch.join(1.0)

    # -- threads ------------------------------------------------------------------------------------

    def _work(self) -> None:
        """One inference worker: take batches until closed; ends early only when killed (see module doc)."""
        me = threading.current_thread().name
        while (taken := self.queue.take(me)) is not None:
            batch, doomed = taken
            for r in doomed:
                left_ms = (r.deadline - self._clock()) * 1e3
                self.delivery.expire(r, f"shed: {left_ms:.0f} ms left; no batch can finish it in time (a lone "
                                        f"frame: ~{(self.latency.mean(r.units) or 0) * 1e3:.0f} ms)")
            if batch and not self._run(batch):
                return

    def _run(self, batch: list[FrameRequest]) -> bool:
        """Analyze one batch; False when the worker must end (it is being torn down)."""
        try:
            self.step.run(batch, self.delivery.emit)
        except Exception as exc:  # a bug outside inference: never lose frames to it; keep working
            log.exception("batch of %d frames failed", len(batch))
            for r in batch:
                self.delivery.fail(r, ErrorCode.INTERNAL, f"worker failed: {exc!r}")
        except BaseException as exc:  # the worker is being killed: answer its batch, then end
            log.critical("inference worker %s killed mid-batch by %r; its %d frames are answered "
                         "WORKER_FAILED and a new worker takes over", threading.current_thread().name,
                         exc, len(batch))
            for r in batch:
                self.delivery.fail(r, ErrorCode.WORKER_FAILED, f"inference worker died: {exc!r}")
            self.queue.wake()  # wake the watch: it starts the replacement
            return False
        return True

    def _watch_deadlines(self) -> None:
        """Answer TIMEOUT at the deadline, queued or in flight, and at once for a queued frame that cannot
        make it after the busy workers (woken by every submit); restart a worker that died."""
        while True:
            self.workers.revive()
            taken = self.queue.overdue()
            if taken is None:
                return
            expired, shed = taken
            now = self._clock()
            for r in expired:
                self.delivery.expire(r, "deadline passed")
            for r in shed:
                self.delivery.expire(r, f"shed on arrival: {(r.deadline - now) * 1e3:.0f} ms left, not enough "
                                        "after the batches in inference")
