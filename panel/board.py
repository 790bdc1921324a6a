"""What the panel shows about a line, built from the watcher's events: counts, reject rate, alarms.

Usage::

    board = LineBoard()
    for event in watcher.poll(0.1):
        for message in board.apply(event):     # dicts ready for the browser (JSON)
            publish(message)
    board.snapshot()                           # the whole state, for a page that just connected

Alarms (``kind``): ``heartbeat_missed`` (the runtime fell silent), ``gap`` (verdicts lost between the
runtime and the panel), ``restart`` (new boot), ``error_burst`` (``burst_errors`` ERROR verdicts within
``burst_window_s``), ``timeout`` (a frame missed its deadline: the line got a fail-safe verdict).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lineguard.runtime.messages import Verdict
from lineguard.runtime.watch import WatchEvent

MAX_ALARMS = 50
MAX_RECENT = 30


@dataclass
class CameraTally:
    ok: int = 0
    ng: int = 0
    error: int = 0
    timeout: int = 0
    last: dict[str, Any] | None = None

    @property
    def reject_rate(self) -> float | None:
        judged = self.ok + self.ng
        return self.ng / judged if judged else None

    def as_dict(self, camera_id: str) -> dict[str, Any]:
        return {"camera_id": camera_id, "ok": self.ok, "ng": self.ng, "error": self.error, "timeout": self.timeout,
                "reject_rate": self.reject_rate, "last": self.last}


@dataclass
class LineBoard:
    burst_errors: int = 5
    burst_window_s: float = 10.0
    cameras: dict[str, CameraTally] = field(default_factory=dict)
    alarms: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_ALARMS))
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_RECENT))
    heartbeat: dict[str, Any] | None = None
    heartbeat_at: float | None = None  # wall clock (s) of the last heartbeat received
    connected: bool = False  # a heartbeat arrived and none has been missed since
    _errors_at: deque[float] = field(default_factory=deque)

    def apply(self, event: WatchEvent, now: float | None = None) -> list[dict[str, Any]]:
        """Update the state; the messages the browsers should get for this event."""
        now = time.time() if now is None else now
        if event.kind == "verdict" and event.verdict is not None:
            return self._on_verdict(event.verdict, now)
        if event.kind == "heartbeat" and event.heartbeat is not None:
            self.heartbeat = event.heartbeat.model_dump(mode="json")
            self.heartbeat_at = now
            self.connected = True
            return [{"type": "heartbeat", "heartbeat": self.heartbeat, "received_at": now}]
        if event.kind == "heartbeat_missed":
            self.connected = False
        if event.kind in ("heartbeat_missed", "gap", "restart"):
            return [self._alarm(event.kind, event.message, now)]
        return []

    def _on_verdict(self, verdict: Verdict, now: float) -> list[dict[str, Any]]:
        tally = self.cameras.setdefault(verdict.camera_id, CameraTally())
        item = {
            "camera_id": verdict.camera_id, "frame_id": verdict.frame_id, "product": verdict.product,
            "verdict": verdict.verdict, "seq": verdict.seq, "score": verdict.score, "p_value": verdict.p_value,
            "grid": [r.grid for r in verdict.regions], "decided_by": verdict.decided_by,
            "error": verdict.error.model_dump() if verdict.error else None,
            "latency_ms": round(verdict.latency_ms.total, 1), "time": now,
        }
        tally.last = item
        messages: list[dict[str, Any]] = []
        if verdict.verdict == "OK":
            tally.ok += 1
        elif verdict.verdict == "NG":
            tally.ng += 1
        elif verdict.verdict == "TIMEOUT":
            tally.timeout += 1
            messages.append(self._alarm("timeout", f"{verdict.camera_id}/{verdict.frame_id} missed its deadline",
                                        now))
        else:
            tally.error += 1
            messages += self._error_burst(now)
        self.recent.appendleft(item)
        return [{"type": "verdict", "verdict": item, "camera": tally.as_dict(verdict.camera_id)}, *messages]

    def _error_burst(self, now: float) -> list[dict[str, Any]]:
        self._errors_at.append(now)
        while self._errors_at and self._errors_at[0] < now - self.burst_window_s:
            self._errors_at.popleft()
        if len(self._errors_at) < self.burst_errors:
            return []
        count = len(self._errors_at)
        self._errors_at.clear()  # one alarm per burst, not one per error after the threshold
        return [self._alarm("error_burst", f"{count} ERROR verdicts within {self.burst_window_s:.0f} s", now)]

    def _alarm(self, kind: str, message: str, now: float) -> dict[str, Any]:
        alarm = {"kind": kind, "message": message, "time": now}
        self.alarms.appendleft(alarm)
        return {"type": "alarm", "alarm": alarm}

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "state",
            "connected": self.connected,
            "heartbeat": self.heartbeat,
            "heartbeat_at": self.heartbeat_at,
            "cameras": [t.as_dict(c) for c, t in sorted(self.cameras.items())],
            "recent": list(self.recent),
            "alarms": list(self.alarms),
        }
