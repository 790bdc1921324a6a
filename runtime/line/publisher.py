"""The serving loop's sending side: each verdict counted, numbered, published on its camera's topic and replied.

Usage::

    publisher = Publisher("press3", counters, pub_socket, router_socket, observers=[metrics.observe_verdict])
    publisher.deliver(verdict, envelope)     # envelope: the inspect request's ROUTER envelope, or None
    publisher.heartbeat(beat)

Owns where a verdict goes (DESIGN.md section 4) and ``seq``, assigned here, where the PUB socket is, so it
numbers the published verdicts gap-free in the order subscribers see them: a verdict with a camera is
published under ``verdict.<line>.<camera>`` and, for an inspect request, sent back behind its envelope; a
CAMERA_NOT_ALLOWED refusal is never published on the camera's topic (only replied); a frame too broken to
name its camera, with nobody to reply to, is dropped and counted. Sending never blocks the loop: a full
subscriber misses the message, a reply that cannot be routed is logged. Loop thread only.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence

import zmq
from pydantic_core import PydanticSerializationError

from lineguard.runtime.contract import HEARTBEAT_TOPIC, Heartbeat, Verdict, verdict_topic
from lineguard.runtime.line.counters import LineCounters

log = logging.getLogger(__name__)


def wire_json(verdict: Verdict) -> bytes:
    """The verdict as UTF-8 JSON. A string no encoder can write (a lone surrogate that got past the header
    checks) is written as "?" rather than costing the frame its verdict or its seq."""
    try:
        return verdict.model_dump_json().encode()
    except PydanticSerializationError:
        log.warning("verdict %r holds text that is not Unicode: written with \"?\" for it", verdict.frame_id)
        text = json.dumps(verdict.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "replace")  # each unwritable code point becomes "?"


class Publisher:
    def __init__(self, line: str, counters: LineCounters, pub: zmq.Socket, router: zmq.Socket,
                 observers: Sequence[Callable[[Verdict], None]] = ()) -> None:
        """``observers`` see every verdict that leaves the service (metrics, the drift monitor)."""
        self.line = line
        self.counters = counters
        self.pub = pub
        self.router = router
        self.observers = list(observers)

    def deliver(self, verdict: Verdict, envelope: list[bytes] | None) -> None:
        """Publish (when the camera is known) and reply (inspect requests); count a frame neither can reach."""
        route = self.counters.count(verdict, reply=envelope is not None)
        for observe in self.observers:
            observe(verdict)
        if route == "denied":  # never on the camera's topic: the claim is what was refused
            denied = self.counters.camera_denied
            if denied & (denied - 1) == 0:  # 1st, 2nd, 4th, ...: a flood cannot fill the log
                log.warning("refused frame %s/%s: %s (%d so far)", verdict.camera_id, verdict.frame_id,
                            verdict.error.message if verdict.error else "", denied)
            if envelope is not None:
                self._reply(envelope, wire_json(verdict), verdict)
            return
        if route == "dropped":
            log.warning("dropped a frame too broken to address: %s", verdict.error.message if verdict.error else "")
            return
        if verdict.camera_id:  # numbered as it is published
            verdict = verdict.model_copy(update={"seq": self.counters.next_seq()})
        body = wire_json(verdict)
        if verdict.camera_id:
            with contextlib.suppress(zmq.Again):  # PUB does not block; a full subscriber just misses it
                self.pub.send_multipart([verdict_topic(self.line, verdict.camera_id), body], zmq.NOBLOCK)
        if envelope is not None:
            self._reply(envelope, body, verdict)

    def heartbeat(self, beat: Heartbeat) -> None:
        with contextlib.suppress(zmq.Again):
            self.pub.send_multipart([HEARTBEAT_TOPIC, beat.model_dump_json().encode()], zmq.NOBLOCK)

    def _reply(self, envelope: list[bytes], body: bytes, verdict: Verdict) -> None:
        try:
            self.router.send_multipart([*envelope, body], zmq.NOBLOCK)
            self.counters.replies_out += 1
        except zmq.ZMQError as exc:  # client gone or its queue full: ROUTER cannot deliver
            log.warning("inspect reply for %s/%s not delivered: %s", verdict.camera_id, verdict.frame_id, exc)
