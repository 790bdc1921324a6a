"""Helpers for tests that talk to a live line service on loopback (every wait bounded by a timeout).

Usage::

    from line_helpers import LOOPBACK, frame, until, verdicts_of, wait_for, watch

    watcher = watch(server)                                   # subscribed: it has seen a heartbeat
    push.send_multipart(frame("cam0", "f1", image))
    verdicts = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 1, settle_s=0.2))
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import zmq

from lineguard.runtime.clients.watch import VerdictWatcher, WatchEvent
from lineguard.runtime.contract import FrameHeader, Verdict, encode_frame
from lineguard.runtime.line.server import LineServer

LOOPBACK = {"frames": "tcp://127.0.0.1:*", "verdicts": "tcp://127.0.0.1:*", "inspect": "tcp://127.0.0.1:*"}


def watch(server: LineServer, **options: object) -> VerdictWatcher:
    """A watcher whose subscription is live (it has seen a heartbeat)."""
    watcher = VerdictWatcher(server.endpoints.verdicts, **options)
    until(watcher, lambda events: any(e.kind == "heartbeat" for e in events))
    return watcher


def until(watcher: VerdictWatcher, done: Callable[[list[WatchEvent]], bool], timeout_s: float = 30.0,
          settle_s: float = 0.0) -> list[WatchEvent]:
    """Events until ``done(events)``, then ``settle_s`` more (to catch duplicates); bounded by timeout_s."""
    events: list[WatchEvent] = []
    end = time.monotonic() + timeout_s
    while not done(events):
        assert time.monotonic() < end, f"timed out; {len(events)} events: {Counter(e.kind for e in events)}"
        events += watcher.poll(0.05)
    settle_end = time.monotonic() + settle_s
    while time.monotonic() < settle_end:
        events += watcher.poll(0.05)
    return events


def verdicts_of(events: list[WatchEvent]) -> list[Verdict]:
    return [e.verdict for e in events if e.kind == "verdict" and e.verdict is not None]


def frame(camera: str, frame_id: str, image: np.ndarray, product: str | None = "weave",
          encoding: str = "raw") -> list[bytes]:
    return encode_frame(FrameHeader(camera_id=camera, frame_id=frame_id, product=product, encoding=encoding), image)


def header_json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.005)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (for a process that binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inspect_frames(endpoint: str, frames: list[list[bytes]], timeout_s: float = 30.0) -> list[Verdict]:
    """Send frames one by one to an inspect (ROUTER) endpoint from a REQ socket; their verdicts, in order."""
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    try:
        verdicts = []
        for parts in frames:
            req.send_multipart(parts)
            assert req.poll(int(timeout_s * 1e3)), f"no reply from {endpoint}"
            verdicts.append(Verdict.model_validate_json(req.recv()))
        return verdicts
    finally:
        req.close()

