"""Subscribe to a line's verdicts: print them, notice lost verdicts, restarts and a silent service.

Usage::

    from lineguard.runtime.clients.watch import VerdictWatcher, format_event

    with VerdictWatcher("tcp://localhost:5556", prefix="verdict.press3.") as watcher:
        for event in watcher.events(duration_s=60):
            print(format_event(event))     # verdict lines, and "GAP 3 verdicts lost (seq 41..43)" etc.

Events (``WatchEvent.kind``):

* ``verdict``  a verdict whose topic starts with ``prefix`` (whole components: ``verdict.press3.cam1`` is taken
  as ``verdict.press3.cam1.``, the topic's trailing separator, so it never matches cam10);
* ``heartbeat`` the service's health message;
* ``gap``      ``missing`` verdicts were published but never arrived (seq jumped, or a heartbeat's
  ``last_verdict_seq`` is ahead of the last seq seen). PUB drops for a slow subscriber and while one
  is disconnected; the seq is per publisher, so the watcher subscribes to every verdict of the service
  and filters by ``prefix`` itself;
* ``restart``  the service restarted (new ``boot_id``, or seq went back); seq counting starts over;
  when the new boot's heartbeat names the boot this watcher followed (``previous_boot``, from the
  line's state file), the verdicts that boot published after the last one seen here are a ``gap``;
* ``heartbeat_missed`` no heartbeat for 2.5 heartbeat intervals (2.5 s before the first one arrives);
* ``bad_message`` a message that is not a Verdict or Heartbeat;
* ``drift``    a heartbeat carries a calibration-drift alarm this watcher had not seen (``drift``: the
  alarm): a camera's reject rate runs well above the false-reject budget (lineguard.runtime.line.drift_monitor);
* ``drift_cleared`` that alarm is no longer in the heartbeats of the same boot.

``reconnect()`` closes and reopens the SUB socket keeping the seq state, as a restarted subscriber
would with ``last_seq``; verdicts published in between show as a gap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import zmq
from pydantic import ValidationError

from lineguard.runtime.contract import HEARTBEAT_TOPIC, DriftAlarm, Heartbeat, Verdict, describe_alarm
from lineguard.runtime.contract.addresses import is_ipv6_endpoint
from lineguard.runtime.security.curve import CurveClientConfig

EventKind = Literal["verdict", "heartbeat", "gap", "restart", "heartbeat_missed", "bad_message", "drift",
                    "drift_cleared"]
MISSED_HEARTBEATS = 2.5  # intervals of silence before heartbeat_missed


@dataclass
class WatchEvent:
    kind: EventKind
    verdict: Verdict | None = None
    heartbeat: Heartbeat | None = None
    missing: int = 0  # gap: verdicts lost
    drift: DriftAlarm | None = None  # drift, drift_cleared: the alarm
    message: str = ""


class VerdictWatcher:
    def __init__(
        self,
        endpoint: str,
        prefix: str = "verdict.",
        last_seq: int | None = None,
        heartbeat_timeout_s: float | None = None,
        hwm: int = 10000,
        context: zmq.Context | None = None,
        curve: CurveClientConfig | None = None,
    ) -> None:
        """``last_seq``: resume after this seq (a restarted watcher); ``heartbeat_timeout_s`` None:
        2.5 intervals of the service's announced heartbeat interval (2.5 s before the first)."""
        self.endpoint = endpoint
        # topics end with a separator: a prefix of whole components (verdict.press3.cam1) never matches cam10
        self.prefix = prefix + "." if prefix.startswith("verdict.") and not prefix.endswith(".") else prefix
        self.last_seq = last_seq
        self.boot_id: str | None = None
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.hwm = hwm
        self.context = context or zmq.Context.instance()
        self.curve = curve  # key pair + server key for a line with CURVE on
        self.lost = 0  # verdicts reported missing so far
        self._last_beat = time.monotonic()
        self._interval_s = 1.0
        self._silent = False
        self._drifting: dict[tuple[str, str], DriftAlarm] = {}  # standing drift alarms, by camera and product
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.context.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"verdict.")
        sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        if self.curve is not None:
            self.curve.secure(sock)
        sock.setsockopt(zmq.IPV6, is_ipv6_endpoint(self.endpoint))
        sock.connect(self.endpoint)
        return sock

    def reconnect(self) -> None:
        """A fresh SUB socket, same seq state: what was published meanwhile shows as a gap."""
        self.socket.close()
        self.socket = self._connect()

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> VerdictWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def silence_limit_s(self) -> float:
        return self.heartbeat_timeout_s if self.heartbeat_timeout_s is not None else MISSED_HEARTBEATS * self._interval_s

    def poll(self, timeout_s: float = 0.1) -> list[WatchEvent]:
        """Events that arrive within ``timeout_s`` (returns as soon as there are some)."""
        events: list[WatchEvent] = []
        if self.socket.poll(max(0, int(timeout_s * 1e3))):
            while True:
                try:
                    topic, *rest = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                events += self._handle(topic, rest)
        silence = time.monotonic() - self._last_beat
        if not self._silent and silence > self.silence_limit_s:
            self._silent = True
            events.append(WatchEvent("heartbeat_missed", message=f"no heartbeat for {silence:.1f} s"))
        return events

    def events(self, duration_s: float | None = None) -> Iterator[WatchEvent]:
        """Events as they come, for ``duration_s`` (None: until the caller stops iterating)."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while end is None or time.monotonic() < end:
            step = 0.1 if end is None else min(0.1, max(0.0, end - time.monotonic()))
            yield from self.poll(step)

    def _handle(self, topic: bytes, rest: list[bytes]) -> list[WatchEvent]:
        if len(rest) != 1:
            return [WatchEvent("bad_message", message=f"{len(rest) + 1} parts on topic {topic!r}")]
        try:
            if topic == HEARTBEAT_TOPIC:
                return self._on_heartbeat(Heartbeat.model_validate_json(rest[0]))
            return self._on_verdict(topic.decode(errors="replace"), Verdict.model_validate_json(rest[0]))
        except ValidationError as exc:
            return [WatchEvent("bad_message", message=f"topic {topic!r}: {exc.errors()[0]['msg']}")]

    def _gap(self, upto: int) -> list[WatchEvent]:
        """Seq ``upto`` was published; anything between the last seen and it is lost."""
        if self.last_seq is None or upto <= self.last_seq + 1:
            return []
        missing = upto - self.last_seq - 1
        self.lost += missing
        return [WatchEvent("gap", missing=missing,
                           message=f"{missing} verdicts lost (seq {self.last_seq + 1}..{upto - 1})")]

    def _tail_gap(self, beat: Heartbeat) -> list[WatchEvent]:
        """Verdicts the previous boot published after the last one seen here (its record says how many)."""
        before = beat.previous_boot
        if before is None or before.boot_id != self.boot_id or self.last_seq is None:
            return []
        missing = before.last_verdict_seq - self.last_seq
        if missing <= 0:
            return []
        self.lost += missing
        bound = "" if before.clean_stop else "at least "
        return [WatchEvent("gap", missing=missing, message=f"{bound}{missing} verdicts of the previous boot lost "
                           f"(seq {self.last_seq + 1}..{before.last_verdict_seq} of boot {before.boot_id})")]

    def _on_verdict(self, topic: str, verdict: Verdict) -> list[WatchEvent]:
        events: list[WatchEvent] = []
        if self.last_seq is not None and verdict.seq <= self.last_seq:
            events.append(WatchEvent("restart", message=f"seq went back from {self.last_seq} to {verdict.seq}"))
            self.last_seq = None
        events += self._gap(verdict.seq)
        self.last_seq = verdict.seq
        if topic.startswith(self.prefix):
            events.append(WatchEvent("verdict", verdict=verdict))
        return events

    def _on_heartbeat(self, beat: Heartbeat) -> list[WatchEvent]:
        events: list[WatchEvent] = []
        self._last_beat = time.monotonic()
        self._interval_s = beat.interval_ms / 1e3
        self._silent = False
        if self.boot_id is not None and beat.boot_id != self.boot_id:
            events.append(WatchEvent("restart", heartbeat=beat, message=f"service restarted (boot {beat.boot_id})"))
            events += self._tail_gap(beat)
            self.last_seq = 0
            self._drifting = {}  # a new boot starts its windows afresh: nothing was cleared
        self.boot_id = beat.boot_id
        events += self._gap(beat.last_verdict_seq + 1)
        self.last_seq = max(self.last_seq or 0, beat.last_verdict_seq)
        events.append(WatchEvent("heartbeat", heartbeat=beat))
        events += self._drift_changes(beat)
        return events

    def _drift_changes(self, beat: Heartbeat) -> list[WatchEvent]:
        """A ``drift`` event per alarm new to this watcher, ``drift_cleared`` per alarm gone since."""
        now = {(a.camera_id, a.product): a for a in beat.drift_alarms}
        events = [WatchEvent("drift", heartbeat=beat, drift=a, message=describe_alarm(a))
                  for key, a in now.items() if key not in self._drifting]
        events += [WatchEvent("drift_cleared", heartbeat=beat, drift=a, message=f"calibration drift on "
                              f"{a.camera_id} ({a.product}) cleared")
                   for key, a in self._drifting.items() if key not in now]
        self._drifting = now
        return events


def format_line(verdict: Verdict) -> str:
    """One line per verdict: camera, frame, class, evidence, latency, seq."""
    head = f"{verdict.camera_id:<10} {verdict.frame_id:<24} {verdict.verdict:<7}"
    if verdict.error is not None:
        detail = f"{verdict.error.code}: {verdict.error.message}"
    elif verdict.score is None:
        detail = "-"
    else:
        p = f"p={verdict.p_value:.2g}" if verdict.p_value is not None else "zero-shot"
        where = ", ".join(f"{r.grid} ({r.area_fraction:.1%})" for r in verdict.regions) or "-"
        detail = f"score={verdict.score:7.2f} {p:<10} where: {where}"
    return f"{head} {detail}  [{verdict.product or '-'}, {verdict.latency_ms.total:.0f} ms, seq {verdict.seq}]"


def format_event(event: WatchEvent) -> str:
    if event.kind == "verdict" and event.verdict is not None:
        return format_line(event.verdict)
    if event.kind == "heartbeat" and event.heartbeat is not None:
        b = event.heartbeat
        errors = " ".join(f"{k}={v}" for k, v in sorted(b.errors.items())) or "none"
        return (f"-- heartbeat {b.line} #{b.seq} {'ready' if b.ready else 'NOT READY'} up {b.uptime_s:.0f}s "
                f"queue {b.queue_depth} in {b.frames_in} out {b.verdicts_out} dropped {b.dropped} errors {errors}")
    return f"!! {event.kind.upper()}: {event.message}"
