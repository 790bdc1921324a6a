"""A sustained mixed stream against a running line service: one verdict per frame, p99, memory over time.

Usage::

    from lineguard.runtime.soak import SoakPlan, run_soak

    with LineServer(inspector, config) as server:       # or a `lineguard serve` process: pass its pid
        result = run_soak(server.endpoints.frames, server.endpoints.verdicts, good=parts, defects=defect_parts,
                          product="weave", plan=SoakPlan(duration_s=20, cameras=3, fps=4))
    result.missing, result.duplicates          # both 0: exactly one verdict per addressable frame
    result.latency_p99_ms, result.rss_growth_mb

Each camera is a thread with its own PUSH socket, sending at ``fps`` a deterministic mix of good raw and
JPEG frames, defective parts, and malformed messages (bad header, truncated JPEG, wrong shape, unknown
product, and messages too broken to name their camera, which the service counts as dropped). A SUB
collects every verdict and the heartbeats (their ``dropped`` count); RSS of the service's process
(``pid``, default this one; psutil) is sampled throughout. Nothing here
asserts: the caller decides what is acceptable (tests: exactly one verdict each and bounded growth).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import zmq
from pydantic import BaseModel

from lineguard.runtime.line_config import LineConfig
from lineguard.runtime.messages import Verdict
from lineguard.runtime.wire import HEARTBEAT_TOPIC, FrameHeader, Heartbeat, encode_frame

MIB = 1024 * 1024
# message kind -> share of the stream
MIX: dict[str, float] = {
    "good_raw": 0.35, "good_jpeg": 0.15, "defect": 0.15, "bad_header": 0.07, "truncated_jpeg": 0.07,
    "bad_shape": 0.07, "unknown_product": 0.07, "unaddressable": 0.07,
}


class SoakPlan(BaseModel):
    duration_s: float = 20.0
    cameras: int = 3
    fps: float = 4.0  # per camera
    rss_interval_s: float = 0.5
    warm_fraction: float = 0.3  # RSS growth is measured from this point of the run (allocators warm)
    drain_timeout_s: float = 60.0  # after the last frame: longest wait for the outstanding verdicts
    connect_timeout_s: float = 30.0  # longest wait for the service's first heartbeat (it may be starting)
    seed: int = 0


class RssSample(BaseModel):
    t_s: float
    rss_mb: float


class SoakResult(BaseModel):
    duration_s: float
    cameras: int
    offered_fps: float
    frames_sent: int
    frames_addressable: int  # each must get exactly one verdict
    frames_unaddressable: int  # each must be counted dropped
    verdicts_received: int
    missing: int  # addressable frames without a verdict
    duplicates: int  # verdicts beyond the first for a frame
    dropped_counted: int  # the service's dropped count over the run
    sends_refused: int  # frames the camera could not hand over (not counted as sent)
    verdict_classes: dict[str, int]
    error_codes: dict[str, int]
    latency_p50_ms: float  # inspected frames (OK/NG): send to verdict arrival
    latency_p99_ms: float
    latency_max_ms: float
    warm_at_s: float  # the warm mark: RSS growth is measured from here
    rss_start_mb: float  # at the warm mark
    rss_end_mb: float
    rss_peak_mb: float
    rss_growth_mb: float  # end minus warm mark
    rss_slope_mb_per_min: float  # least-squares slope after the warm mark
    rss: list[RssSample]


def memory_bound_mb(config: LineConfig, frame_bytes: int, slack_mb: float = 64.0) -> float:
    """The RSS growth a healthy service may show once warm: every bounded buffer full, plus allocator slack.

    Frames can be held in the inference queue, the frames and inspect sockets' receive queues (their
    high-water marks) and one batch per worker in flight; verdicts in the PUB send queue are ~1 KB each.
    Anything that keeps growing past that is a leak. ``slack_mb`` covers allocator fragmentation and
    ONNX Runtime's arena settling.
    """
    b, hwm = config.batching, config.hwm
    frames = b.max_queue + hwm.frames_rcv + hwm.inspect_rcv + b.workers * b.max_batch
    return (frames * frame_bytes + hwm.verdicts_snd * 1024) / MIB + slack_mb


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


@dataclass
class _Camera:
    camera_id: str
    sent: dict[str, float] = field(default_factory=dict)  # addressable frame id -> send time
    unaddressable: int = 0
    refused: int = 0


def _message(kind: str, camera: str, frame_id: str, product: str, good: np.ndarray, defect: np.ndarray) -> list[bytes]:
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


def _rss_mb(process: object) -> float:
    return process.memory_info().rss / MIB  # type: ignore[attr-defined]


def run_soak(frames_endpoint: str, verdicts_endpoint: str, good: Sequence[np.ndarray],
             defects: Sequence[np.ndarray], product: str, plan: SoakPlan | None = None,
             pid: int | None = None) -> SoakResult:
    """Drive a running service (serving ``product``; process ``pid``) with the mixed stream."""
    try:
        import psutil
    except ImportError as exc:  # a bench/test tool: the edge runtime itself does not need psutil
        raise RuntimeError("the soak measures memory with psutil: pip install 'lineguard[dev]'") from exc
    plan = plan or SoakPlan()
    if not good or not defects:
        raise ValueError("the soak needs at least one good and one defective frame")
    process = psutil.Process(pid or os.getpid())
    context = zmq.Context.instance()
    stop_sending = threading.Event()
    stop_collecting = threading.Event()
    cameras = [_Camera(f"soak{i}") for i in range(plan.cameras)]
    arrivals: dict[tuple[str, str], list[tuple[float, Verdict]]] = {}
    arrivals_lock = threading.Lock()
    rss: list[RssSample] = []
    start = time.perf_counter()

    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(verdicts_endpoint)
    beats: list[Heartbeat] = []  # the first and the latest
    give_up = time.monotonic() + plan.connect_timeout_s
    while not beats:  # subscribed once a heartbeat arrives
        if time.monotonic() > give_up:
            sub.close()
            raise RuntimeError(f"no heartbeat from {verdicts_endpoint} in {plan.connect_timeout_s:.0f} s: "
                               "is the service running?")
        if sub.poll(200):
            topic, body = sub.recv_multipart()
            if topic == HEARTBEAT_TOPIC:
                beats.append(Heartbeat.model_validate_json(body))

    def dropped() -> int:
        return beats[-1].dropped - beats[0].dropped

    def collect() -> None:
        while not stop_collecting.is_set():
            if not sub.poll(100):
                continue
            while True:
                try:
                    topic, body = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if topic == HEARTBEAT_TOPIC:
                    beats[1:] = [Heartbeat.model_validate_json(body)]
                    continue
                verdict = Verdict.model_validate_json(body)
                with arrivals_lock:
                    arrivals.setdefault((verdict.camera_id, verdict.frame_id), []).append((time.perf_counter(), verdict))

    def sample_rss() -> None:
        while not stop_collecting.wait(plan.rss_interval_s):
            rss.append(RssSample(t_s=time.perf_counter() - start, rss_mb=_rss_mb(process)))

    def send(camera: _Camera, index: int) -> None:
        rng = np.random.default_rng(plan.seed * 1000 + index)
        kinds, weights = list(MIX), np.array(list(MIX.values()))
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.setsockopt(zmq.SNDHWM, 64)
        push.connect(frames_endpoint)
        period = 1.0 / plan.fps
        next_at = time.perf_counter() + rng.uniform(0, period)  # cameras out of phase
        n = 0
        try:
            while not stop_sending.is_set():
                time.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += period
                kind = str(rng.choice(kinds, p=weights / weights.sum()))
                frame_id = f"{camera.camera_id}-{n:06d}"
                n += 1
                message = _message(kind, camera.camera_id, frame_id, product, good[n % len(good)],
                                   defects[n % len(defects)])
                sent_at = time.perf_counter()
                try:
                    push.send_multipart(message, zmq.NOBLOCK)
                except zmq.Again:
                    camera.refused += 1
                    continue
                if kind == "unaddressable":
                    camera.unaddressable += 1
                else:
                    camera.sent[frame_id] = sent_at
        finally:
            push.close()

    rss.append(RssSample(t_s=0.0, rss_mb=_rss_mb(process)))
    threads = [threading.Thread(target=collect, name="soak-collect", daemon=True),
               threading.Thread(target=sample_rss, name="soak-rss", daemon=True)]
    threads += [threading.Thread(target=send, args=(c, i), name=f"soak-{c.camera_id}", daemon=True)
                for i, c in enumerate(cameras)]
    for t in threads:
        t.start()
    try:
        time.sleep(plan.duration_s)
        stop_sending.set()
        for t in threads[2:]:
            t.join(10)
        expected = {(c.camera_id, f) for c in cameras for f in c.sent}
        unaddressable = sum(c.unaddressable for c in cameras)
        give_up = time.monotonic() + plan.drain_timeout_s

        def answered() -> bool:
            with arrivals_lock:
                every_frame = expected <= arrivals.keys()
            return every_frame and dropped() >= unaddressable

        while time.monotonic() < give_up and not answered():
            time.sleep(0.05)
        time.sleep(0.3)  # a duplicate would arrive now
        beat_at = beats[-1].seq
        beat_by = time.monotonic() + 5
        while time.monotonic() < beat_by and beats[-1].seq == beat_at:
            time.sleep(0.05)  # a heartbeat sent after the last verdict: its dropped count is final
    finally:
        stop_collecting.set()
        for t in threads[:2]:
            t.join(5)
        sub.close()
    rss.append(RssSample(t_s=time.perf_counter() - start, rss_mb=_rss_mb(process)))
    return _summarise(plan, cameras, arrivals, expected, unaddressable, dropped(), rss)


def _summarise(plan: SoakPlan, cameras: list[_Camera], arrivals: dict[tuple[str, str], list[tuple[float, Verdict]]],
               expected: set[tuple[str, str]], unaddressable: int, dropped: int, rss: list[RssSample]) -> SoakResult:
    sent_at = {(c.camera_id, f): t for c in cameras for f, t in c.sent.items()}
    firsts = {key: got[0] for key, got in arrivals.items() if key in expected}
    classes = Counter(v.verdict for _, v in firsts.values())
    codes = Counter(v.error.code for _, v in firsts.values() if v.error is not None)
    inspected = [(t - sent_at[key]) * 1e3 for key, (t, v) in firsts.items() if v.verdict in ("OK", "NG")]
    ms = np.asarray(inspected or [float("nan")])
    warm_t = plan.warm_fraction * plan.duration_s
    warm = [s for s in rss if s.t_s >= warm_t] or rss[-1:]
    t = np.array([s.t_s for s in warm])
    mb = np.array([s.rss_mb for s in warm])
    slope = float(np.polyfit(t, mb, 1)[0] * 60) if len(warm) >= 3 and np.ptp(t) > 0 else 0.0
    return SoakResult(
        duration_s=plan.duration_s, cameras=plan.cameras, offered_fps=plan.cameras * plan.fps,
        frames_sent=len(expected) + unaddressable, frames_addressable=len(expected),
        frames_unaddressable=unaddressable, verdicts_received=sum(len(v) for v in arrivals.values()),
        missing=len(expected - arrivals.keys()),
        duplicates=sum(len(v) - 1 for v in arrivals.values()) + len(arrivals.keys() - expected),
        dropped_counted=dropped, sends_refused=sum(c.refused for c in cameras),
        verdict_classes=dict(classes), error_codes=dict(codes),
        latency_p50_ms=float(np.percentile(ms, 50)), latency_p99_ms=float(np.percentile(ms, 99)),
        latency_max_ms=float(ms.max()),
        warm_at_s=warm_t, rss_start_mb=warm[0].rss_mb, rss_end_mb=rss[-1].rss_mb, rss_peak_mb=max(s.rss_mb for s in rss),
        rss_growth_mb=rss[-1].rss_mb - warm[0].rss_mb, rss_slope_mb_per_min=slope, rss=rss,
    )
