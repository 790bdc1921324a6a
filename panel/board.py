"""What the panel shows about a line, built from the watcher's events: counts, reject rate, alarms.

Usage::

    board = LineBoard()
    for event in watcher.poll(0.1):
        for message in board.apply(event):     # PanelMessage models, sent to the browsers as SSE
            publish(message.type, message.model_dump_json())
    board.snapshot()                           # StateMessage: the whole state, for a page that just connected

Alarms (``kind``): ``heartbeat_missed`` (the runtime fell silent), ``gap`` (verdicts lost between the
runtime and the panel), ``restart`` (new boot), ``error_burst`` (``burst_errors`` ERROR verdicts within
``burst_window_s``), ``timeout`` (a frame missed its deadline: the line got a fail-safe verdict),
``calibration_drift`` (a heartbeat carries a drift alarm: a camera's reject rate runs well above the
false-reject budget) and ``drift_cleared`` (that alarm ended).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from lineguard.runtime.clients.watch import WatchEvent
from lineguard.runtime.contract import (
    Alarm,
    AlarmKind,
    AlarmMessage,
    CameraView,
    FeedItem,
    Heartbeat,
    HeartbeatMessage,
    PanelMessage,
    StateMessage,
    Verdict,
    VerdictMessage,
)

MAX_ALARMS = 50
MAX_RECENT = 30
MAX_CAMERAS = 64  # tiles kept, least recently heard from dropped first: a stream of made-up camera ids
# (a frames client may claim any on an open line) must not grow the panel's memory and every snapshot


@dataclass
class LineBoard:
    burst_errors: int = 5
    burst_window_s: float = 10.0
    cameras: dict[str, CameraView] = field(default_factory=dict)
    alarms: deque[Alarm] = field(default_factory=lambda: deque(maxlen=MAX_ALARMS))
    recent: deque[FeedItem] = field(default_factory=lambda: deque(maxlen=MAX_RECENT))
    heartbeat: Heartbeat | None = None
    heartbeat_at: float | None = None  # wall clock (s) of the last heartbeat received
    connected: bool = False  # a heartbeat arrived and none has been missed since
    _errors_at: deque[float] = field(default_factory=deque)

    def apply(self, event: WatchEvent, now: float | None = None) -> list[PanelMessage]:
        """Update the state; the messages the browsers should get for this event."""
        now = time.time() if now is None else now
        if event.kind == "verdict" and event.verdict is not None:
            return self._on_verdict(event.verdict, now)
        if event.kind == "heartbeat" and event.heartbeat is not None:
            self.heartbeat = event.heartbeat
            self.heartbeat_at = now
            self.connected = True
            return [HeartbeatMessage(heartbeat=event.heartbeat, received_at=now)]
        if event.kind == "heartbeat_missed":
            self.connected = False
        if event.kind in ("heartbeat_missed", "gap", "restart"):
            return [self._alarm(event.kind, event.message, now)]
        if event.kind == "drift":
            return [self._alarm("calibration_drift", event.message, now)]
        if event.kind == "drift_cleared":
            return [self._alarm("drift_cleared", event.message, now)]
        return []

    def _on_verdict(self, verdict: Verdict, now: float) -> list[PanelMessage]:
        item = FeedItem(
            camera_id=verdict.camera_id, frame_id=verdict.frame_id, product=verdict.product,
            verdict=verdict.verdict, seq=verdict.seq, score=verdict.score, p_value=verdict.p_value,
            grid=[r.grid for r in verdict.regions], decided_by=verdict.decided_by, error=verdict.error,
            latency_ms=round(verdict.latency_ms.total, 1), time=now,
        )
        camera = self.cameras.pop(verdict.camera_id, None) or CameraView(camera_id=verdict.camera_id)
        self.cameras[verdict.camera_id] = camera  # now the most recently heard from
        while len(self.cameras) > MAX_CAMERAS:
            del self.cameras[next(iter(self.cameras))]
        camera.last = item
        messages: list[PanelMessage] = []
        if verdict.verdict == "OK":
            camera.ok += 1
        elif verdict.verdict == "NG":
            camera.ng += 1
        elif verdict.verdict == "TIMEOUT":
            camera.timeout += 1
            messages.append(self._alarm("timeout", f"{verdict.camera_id}/{verdict.frame_id} missed its deadline",
                                        now))
        else:
            camera.error += 1
            messages += self._error_burst(now)
        judged = camera.ok + camera.ng
        camera.reject_rate = camera.ng / judged if judged else None
        self.recent.appendleft(item)
        return [VerdictMessage(verdict=item, camera=camera.model_copy()), *messages]

    def _error_burst(self, now: float) -> list[PanelMessage]:
        self._errors_at.append(now)
        while self._errors_at and self._errors_at[0] < now - self.burst_window_s:
            self._errors_at.popleft()
        if len(self._errors_at) < self.burst_errors:
            return []
        count = len(self._errors_at)
        self._errors_at.clear()  # one alarm per burst, not one per error after the threshold
        return [self._alarm("error_burst", f"{count} ERROR verdicts within {self.burst_window_s:.0f} s", now)]

    def _alarm(self, kind: AlarmKind, message: str, now: float) -> AlarmMessage:
        alarm = Alarm(kind=kind, message=message, time=now)
        self.alarms.appendleft(alarm)
        return AlarmMessage(alarm=alarm)

    def snapshot(self) -> StateMessage:
        return StateMessage(connected=self.connected, heartbeat=self.heartbeat, heartbeat_at=self.heartbeat_at,
                            cameras=[c.model_copy() for _, c in sorted(self.cameras.items())],
                            recent=list(self.recent), alarms=list(self.alarms))
