"""The batcher's sink: each request's one verdict goes to the service, and an archived frame's only after its
frame is in the archive.

Usage::

    delivery = Delivery(queue, sink, bundle_id, clock, writer=ArchiveWriter(archive).start())
    delivery.emit(Outcome(request, verdict, inspection))   # at once, or after the archive writer stored it
    delivery.expire(request, "deadline passed")             # TIMEOUT (or its verdict, if one waits on the archive)
    delivery.fail(request, ErrorCode.WORKER_FAILED, "inference worker died")

Owns the rule "first answer wins" (through :meth:`BatchQueue.claim`) and "archived before published": an
OK/NG verdict whose frame the archive keeps is parked while the archive writer (a bounded thread of its own,
lineguard.runtime.line.archive.ArchiveWriter) stores it, and handed to the sink by the writer right after;
so an explanation request for any NG verdict a client holds finds its frame. Nothing is lost or held past
its deadline: when the writer is full the frame is not kept (an archive failure) and the verdict goes out at
once, and a verdict still parked at its deadline is published then, by the deadline watch, while its write
finishes afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lineguard.runtime.contract import ErrorCode, Verdict
from lineguard.runtime.line.analyze import Outcome
from lineguard.runtime.line.archive import ArchiveWriter
from lineguard.runtime.line.batch_queue import BatchQueue
from lineguard.runtime.line.pending import FrameRequest, error_for, timeout_for

log = logging.getLogger(__name__)

VerdictSink = Callable[[FrameRequest, Verdict], None]


class Delivery:
    def __init__(self, queue: BatchQueue, sink: VerdictSink, bundle_id: str,
                 clock: Callable[[], float] = time.monotonic, writer: ArchiveWriter | None = None) -> None:
        self.queue = queue
        self.sink = sink
        self.bundle_id = bundle_id
        self.writer = writer
        self._clock = clock
        self._lock = threading.Lock()
        self._parked: dict[FrameRequest, Verdict] = {}  # verdicts waiting for their frame's archive write

    @property
    def parked(self) -> int:
        with self._lock:
            return len(self._parked)

    def emit(self, outcome: Outcome) -> None:
        """Deliver an outcome: after its archive write when the archive keeps its frame, else now."""
        request, verdict, found = outcome.request, outcome.verdict, outcome.inspection
        writer = self.writer
        if (writer is None or found is None or request.done or verdict.verdict not in ("OK", "NG")
                or not writer.archive.wants(verdict)):
            self.answer(request, verdict)
            return
        with self._lock:
            self._parked[request] = verdict

        def stored(folder: Path | None, request: FrameRequest = request) -> None:
            self._release(request)

        if not writer.submit(verdict, found.anomaly_map, found.model_rgb, then=stored):
            self._release(request)  # full: not kept (counted), published at once

    def expire(self, request: FrameRequest, why: str) -> None:
        """The request's deadline passed (or no batch can make it, or the service stops): TIMEOUT, unless its
        verdict was made in time and only waits on the archive; then that verdict goes out now."""
        with self._lock:
            verdict = self._parked.pop(request, None)
        if verdict is None:
            verdict = timeout_for(request, self.bundle_id, self._clock(), why)
        else:
            log.debug("frame %s/%s published before its archive write finished (%s)", request.camera_id,
                      request.frame_id, why)
        self.answer(request, verdict)

    def fail(self, request: FrameRequest, code: ErrorCode, message: str) -> None:
        """ERROR for a request, unless its verdict was made already and only waits on the archive."""
        with self._lock:
            if request in self._parked:
                return
        self.answer(request, error_for(request, code, message, self.bundle_id, self._clock()))

    def answer(self, request: FrameRequest, verdict: Verdict) -> None:
        """Hand a request's verdict to the sink unless it already has one (first answer wins)."""
        if not self.queue.claim(request):
            return
        try:
            self.sink(request, verdict)
        except Exception:  # a sink bug must not kill the worker or lose the other verdicts
            log.exception("verdict sink failed for frame %s/%s", request.camera_id, request.frame_id)
        finally:
            self.queue.delivered()

    def _release(self, request: FrameRequest) -> None:
        with self._lock:
            verdict = self._parked.pop(request, None)
        if verdict is not None:
            self.answer(request, verdict)
