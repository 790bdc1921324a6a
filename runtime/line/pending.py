"""A frame waiting for its verdict, and the verdicts that need no inference (ERROR, TIMEOUT).

Usage::

    from lineguard.runtime.line.pending import FrameRequest, error_for, refusal, timeout_for

    request = FrameRequest("cam0", "f1", "tile", deadline=time.monotonic() + 0.2, load=lambda: image)
    timeout_for(request, bundle_id, now)                              # TIMEOUT, latency counted from receipt
    error_for(request, ErrorCode.BAD_PAYLOAD, "corrupt jpeg", bundle_id, now)
    refusal(exc.ids, exc.code, exc.message, bundle_id, total_ms=0.3)  # a frame refused before it was queued

Owns :class:`FrameRequest` (what the batcher queues, plans and answers) and the builders of every verdict
that is not an inspection result; each is built whole, latency included (never patched afterwards).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lineguard.runtime.contract import ErrorCode, ErrorInfo, FrameHeader, FrameIds, LatencyBreakdown, Verdict

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """submit() after close(): the service is shutting down."""


@dataclass(eq=False)
class FrameRequest:
    """One frame waiting for a verdict. ``load`` returns its pixels (it may raise FrameError).

    ``done`` is set (under the batch queue's lock) when its one verdict is handed out: the first answer wins.
    """

    camera_id: str
    frame_id: str
    product: str | None
    deadline: float  # seconds of the batcher's clock (time.monotonic unless one is injected)
    load: Callable[[], np.ndarray]
    received: float = field(default_factory=time.monotonic)
    context: Any = None  # whatever the caller needs to deliver the verdict (e.g. a ROUTER envelope)
    enqueued: float = 0.0
    units: int = 1  # its cost in frames inspected whole: its product's tiles per side, squared (set on submit)
    done: bool = False

    @property
    def ids(self) -> FrameIds:
        return FrameIds(self.camera_id, self.frame_id, self.product or "")


def refusal(ids: FrameIds | FrameHeader, code: ErrorCode, message: str, bundle_id: str = "",
            total_ms: float = 0.0) -> Verdict:
    """The ERROR verdict of a frame, with its latency from receipt."""
    if isinstance(ids, FrameHeader):
        ids = FrameIds(ids.camera_id, ids.frame_id, ids.product or "")
    return Verdict(frame_id=ids.frame_id, camera_id=ids.camera_id, product=ids.product, verdict="ERROR",
                   bundle_id=bundle_id, error=ErrorInfo(code=code, message=message),
                   latency_ms=LatencyBreakdown(total=total_ms))


def error_for(request: FrameRequest, code: ErrorCode, message: str, bundle_id: str, now: float) -> Verdict:
    """ERROR for a queued request (decode failed, inference failed, the worker died)."""
    return refusal(request.ids, code, message, bundle_id, (now - request.received) * 1e3)


def timeout_for(request: FrameRequest, bundle_id: str, now: float, why: str = "deadline passed") -> Verdict:
    """TIMEOUT for a request whose deadline passed or that no batch can finish in time."""
    latency = (now - request.received) * 1e3
    log.debug("TIMEOUT %s/%s after %.1f ms: %s", request.camera_id, request.frame_id, latency, why)
    return Verdict(frame_id=request.frame_id, camera_id=request.camera_id, product=request.product or "",
                   verdict="TIMEOUT", bundle_id=bundle_id, latency_ms=LatencyBreakdown(total=latency))
