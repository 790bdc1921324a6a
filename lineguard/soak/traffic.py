"""The soak's traffic: cameras pushing a deterministic mix of good, defective and malformed frames, and a
technician asking about frames (unknown, malformed, over-long and real questions, cancelled early).

Usage::

    camera = Camera("soak0")
    send_frames(context, frames_endpoint, camera, plan, product, good, defects, stop, seed=index)
    camera.sent        # addressable frame id -> send time: each must get exactly one verdict
    asker = ExplanationAsker(context, explanations_endpoint, curve=None, seed=0)
    asker.ask(ng_frame_ids); asker.read(); asker.unanswered
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import zmq

from lineguard.runtime.contract import ExplainReply, ExplainRequest, FrameHeader, encode_frame
from lineguard.runtime.security.curve import CurveClientConfig
from lineguard.soak.plan import SoakPlan

# message kind -> share of the stream
MIX: dict[str, float] = {
    "good_raw": 0.35, "good_jpeg": 0.15, "defect": 0.15, "bad_header": 0.07, "truncated_jpeg": 0.07,
    "bad_shape": 0.07, "unknown_product": 0.07, "unaddressable": 0.07,
}


def painted_defects(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Parts with a bright foreign patch (a fifth of each side, placed differently in each): NG frames."""
    out = []
    for i, part in enumerate(parts):
        defect = part.copy()
        h, w = defect.shape[:2]
        y, x = (i * 37) % (h // 2), (i * 53) % (w // 2)
        defect[y : y + h // 5, x : x + w // 5] = 255
        out.append(defect)
    return out


def message(kind: str, camera: str, frame_id: str, product: str, good: np.ndarray, defect: np.ndarray) -> list[bytes]:
    """The multipart message of one ``kind`` of :data:`MIX` (well-formed or deliberately broken)."""
    def header(**fields: object) -> bytes:
        return json.dumps({"camera_id": camera, "frame_id": frame_id, **fields}).encode()

    if kind == "good_raw":
        return encode_frame(FrameHeader(camera_id=camera, frame_id=frame_id, product=product), good)
    if kind == "good_jpeg":
        return encode_frame(FrameHeader(camera_id=camera, frame_id=frame_id, product=product, encoding="jpeg"), good)
    if kind == "defect":
        return encode_frame(FrameHeader(camera_id=camera, frame_id=frame_id, product=product), defect)
    if kind == "bad_header":
        return [header(product=product, exposure=3), good.tobytes()]
    if kind == "truncated_jpeg":
        jpeg = cv2.imencode(".jpg", good)[1].tobytes()
        return [header(product=product, encoding="jpeg"), jpeg[: len(jpeg) // 2]]
    if kind == "bad_shape":
        return [header(product=product, shape=list(good.shape)), good.tobytes()[:-7]]
    if kind == "unknown_product":
        return encode_frame(FrameHeader(camera_id=camera, frame_id=frame_id, product=product + "-unknown"), good)
    if kind == "unaddressable":
        return [b"\xff not json at all", b"x"]
    raise ValueError(f"unknown message kind {kind!r}")


@dataclass
class Camera:
    """What one camera of the soak sent."""

    camera_id: str
    sent: dict[str, float] = field(default_factory=dict)  # addressable frame id -> send time (perf_counter)
    unaddressable: int = 0
    refused: int = 0  # frames the PUSH socket could not hand over (not counted as sent)


def send_frames(context: zmq.Context, endpoint: str, camera: Camera, plan: SoakPlan, product: str,
                good: Sequence[np.ndarray], defects: Sequence[np.ndarray], stop: threading.Event, index: int = 0,
                curve: CurveClientConfig | None = None) -> None:
    """Push the mix at ``plan.fps`` from ``camera`` (its own PUSH socket) until ``stop`` is set."""
    rng = np.random.default_rng(plan.seed * 1000 + index)
    kinds, weights = list(MIX), np.array(list(MIX.values()))
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.setsockopt(zmq.SNDHWM, 64)
    if curve is not None:
        curve.secure(push)
    push.connect(endpoint)
    period = 1.0 / plan.fps
    next_at = time.perf_counter() + rng.uniform(0, period)  # cameras out of phase
    n = 0
    try:
        while not stop.is_set():
            time.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += period
            kind = str(rng.choice(kinds, p=weights / weights.sum()))
            frame_id = f"{camera.camera_id}-{n:06d}"
            n += 1
            parts = message(kind, camera.camera_id, frame_id, product, good[n % len(good)], defects[n % len(defects)])
            sent_at = time.perf_counter()
            try:
                push.send_multipart(parts, zmq.NOBLOCK)
            except zmq.Again:
                camera.refused += 1
                continue
            if kind == "unaddressable":
                camera.unaddressable += 1
            else:
                camera.sent[frame_id] = sent_at
    finally:
        push.close()


class ExplanationAsker:
    """The explanation side of the stream: one DEALER with several requests in flight, every reply counted.

    Deliberately not :class:`~lineguard.runtime.clients.explain.ExplainClient` (one well-formed question per
    socket): this sends malformed and over-long requests too, and keeps several questions open at once."""

    QUESTION = "Why was this part rejected?"

    def __init__(self, context: zmq.Context, endpoint: str, curve: CurveClientConfig | None, seed: int) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.secure(self.sock)
        self.sock.connect(endpoint)
        self.rng = np.random.default_rng(seed)
        self.requests = 0
        self.replies: Counter[str] = Counter()  # final / cancelled / error code
        self._cancel_after_chunk: set[str] = set()
        self.n = 0

    def ask(self, ng_frames: list[str]) -> None:
        """Send the next request of the cycle: unknown frame, malformed, over-long, then real NG frames."""
        kinds = ["unknown_frame", "malformed", "oversize"] + (["real"] * 2 if ng_frames else [])
        kind = kinds[self.n % len(kinds)]
        self.n += 1
        if kind == "unknown_frame":
            body = ExplainRequest(frame_id=f"soak-no-such-frame-{self.n}").model_dump_json().encode()
        elif kind == "malformed":
            body = b'{"frame_id": 7, "surprise": true}'
        elif kind == "oversize":
            body = ExplainRequest(frame_id="soak-oversize", question="x" * 3000).model_dump_json().encode()
        else:
            frame_id = ng_frames[int(self.rng.integers(len(ng_frames)))]
            self._cancel_after_chunk.add(frame_id)
            body = ExplainRequest(frame_id=frame_id, question=self.QUESTION).model_dump_json().encode()
        self.sock.send(body)
        self.requests += 1

    def read(self) -> None:
        """Count every reply waiting; cancel a real answer at its first chunk (the LLM never hogs the cores)."""
        while True:
            try:
                reply = ExplainReply.model_validate_json(self.sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            if reply.type == "chunk":
                if reply.frame_id in self._cancel_after_chunk:  # the answer streams: stop it, free the model
                    self._cancel_after_chunk.discard(reply.frame_id)
                    self.sock.send(ExplainRequest(frame_id=reply.frame_id, cancel=True).model_dump_json().encode())
                continue
            self._cancel_after_chunk.discard(reply.frame_id)
            if reply.type == "error":
                self.replies[str(reply.error.code) if reply.error else "error"] += 1
            else:
                self.replies["cancelled" if reply.finish_reason == "cancelled" else "final"] += 1

    @property
    def unanswered(self) -> int:
        return self.requests - sum(self.replies.values())

    def close(self) -> None:
        self.sock.close()
