"""VerdictWatcher against a scripted PUB socket: gaps, restarts, missed heartbeats, prefix filter."""

from __future__ import annotations

import time

import pytest
import zmq

from lineguard.runtime.clients.watch import VerdictWatcher, WatchEvent, format_event, format_line
from lineguard.runtime.contract import (
    HEARTBEAT_TOPIC,
    ErrorCode,
    ErrorInfo,
    Heartbeat,
    Verdict,
    verdict_topic,
)

CTX = zmq.Context.instance()


class Publisher:
    def __init__(self) -> None:
        self.sock = CTX.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seq = 0
        self.beats = 0

    def verdict(self, camera: str = "cam0", send: bool = True) -> None:
        self.seq += 1
        if send:
            v = Verdict(frame_id=f"f{self.seq}", camera_id=camera, product="tile", seq=self.seq, verdict="OK", score=1.0)
            self.sock.send_multipart([verdict_topic("l1", camera), v.model_dump_json().encode()])

    def heartbeat(self, boot: str = "boot1") -> None:
        self.beats += 1
        beat = Heartbeat(line="l1", boot_id=boot, seq=self.beats, timestamp_ns=0, interval_ms=100, uptime_s=1,
                         ready=True, last_verdict_seq=self.seq)
        self.sock.send_multipart([HEARTBEAT_TOPIC, beat.model_dump_json().encode()])


@pytest.fixture
def pub():
    p = Publisher()
    yield p
    p.sock.close()


def collect(watcher: VerdictWatcher, until: str, timeout_s: float = 5.0) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        events += watcher.poll(0.05)
        if any(e.kind == until for e in events):
            return events
    raise AssertionError(f"no {until} event in {[e.kind for e in events]}")


def joined(pub: Publisher, watcher: VerdictWatcher) -> None:
    """Publish heartbeats until the subscription is live (the slow-joiner problem)."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        pub.heartbeat()
        if any(e.kind == "heartbeat" for e in watcher.poll(0.05)):
            return
    raise AssertionError("subscription never became live")


def test_seq_gap_is_reported(pub: Publisher) -> None:
    with VerdictWatcher(pub.endpoint) as watcher:
        joined(pub, watcher)
        pub.verdict()
        pub.verdict(send=False)  # lost on the way
        pub.verdict(send=False)
        pub.verdict()
        events = collect(watcher, "gap")
        events += watcher.poll(0.2)
        kinds = [e.kind for e in events]
        assert kinds == ["verdict", "gap", "verdict"], kinds
        assert events[1].missing == 2 and watcher.lost == 2


def test_lost_tail_shows_at_the_next_heartbeat(pub: Publisher) -> None:
    with VerdictWatcher(pub.endpoint) as watcher:
        joined(pub, watcher)
        pub.verdict()
        pub.verdict(send=False)
        pub.heartbeat()
        gap = [e for e in collect(watcher, "gap") if e.kind == "gap"]
        assert gap[0].missing == 1


def test_restart_is_reported_and_counting_starts_over(pub: Publisher) -> None:
    with VerdictWatcher(pub.endpoint) as watcher:
        joined(pub, watcher)
        pub.verdict()
        pub.verdict()
        collect(watcher, "verdict")
        pub.seq = 0
        pub.heartbeat(boot="boot2")
        pub.verdict()
        events = collect(watcher, "restart")
        events += watcher.poll(0.2)
        assert "gap" not in [e.kind for e in events]
        assert watcher.last_seq == 1 and watcher.boot_id == "boot2"


def test_missed_heartbeats(pub: Publisher) -> None:
    with VerdictWatcher(pub.endpoint) as watcher:
        joined(pub, watcher)  # announces a 100 ms interval: silent after 250 ms
        start = time.monotonic()
        events = collect(watcher, "heartbeat_missed", timeout_s=2)
        assert 0.2 < time.monotonic() - start < 1.5
        assert [e.kind for e in watcher.poll(0.4)] == []  # reported once per silence
        pub.heartbeat()
        assert "heartbeat" in [e.kind for e in collect(watcher, "heartbeat")]
        assert "heartbeat_missed" in format_event(events[-1]).lower()


def test_prefix_filters_verdicts_but_seq_covers_all(pub: Publisher) -> None:
    with VerdictWatcher(pub.endpoint, prefix="verdict.l1.cam1") as watcher:  # taken as verdict.l1.cam1.
        joined(pub, watcher)
        pub.verdict("cam0")
        pub.verdict("cam1")
        pub.verdict("cam10")  # shares cam1's prefix but not its topic: the topic ends with a separator
        pub.verdict("cam1")
        events = collect(watcher, "verdict") + watcher.poll(0.2)
        assert [e.verdict.seq for e in events if e.kind == "verdict"] == [2, 4]
        assert "gap" not in [e.kind for e in events]


def test_topics_end_with_a_separator() -> None:
    assert verdict_topic("press3", "cam1") == b"verdict.press3.cam1."
    assert not verdict_topic("press3", "cam10").startswith(verdict_topic("press3", "cam1"))


def test_format_line() -> None:
    ok = Verdict(frame_id="f1", camera_id="cam0", product="tile", seq=3, verdict="OK", score=1.5, p_value=0.4)
    assert "OK" in format_line(ok) and "p=0.4" in format_line(ok) and "seq 3" in format_line(ok)
    err = Verdict(frame_id="f2", camera_id="cam0", product="", verdict="ERROR",
                  error=ErrorInfo(code=ErrorCode.BAD_PAYLOAD, message="jpeg stream is truncated"))
    assert "BAD_PAYLOAD: jpeg stream is truncated" in format_line(err)
