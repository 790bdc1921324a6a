"""A sustained mixed stream against a running line service: one verdict per frame, p99, and whether memory or
open files leak.

Usage::

    from lineguard.runtime.soak import SoakPlan, run_soak

    with LineServer(inspector, config) as server:       # or a `lineguard serve` process: pass its pid
        result = run_soak(server.endpoints.frames, server.endpoints.verdicts, good=parts, defects=defect_parts,
                          product="weave", plan=SoakPlan(duration_s=60, cameras=3, fps=4),
                          explanations=server.endpoints.explanations)
    result.missing, result.duplicates          # both 0: exactly one verdict per addressable frame
    result.rss_slope_mb_per_min, result.fds_slope_per_min, result.leak_suspected

Each camera is a thread with its own PUSH socket, sending at ``fps`` a deterministic mix of good raw and
JPEG frames, defective parts, and malformed messages (bad header, truncated JPEG, wrong shape, unknown
product, and messages too broken to name their camera, which the service counts as dropped). With an
``explanations`` endpoint a DEALER asks about frames every ``explain_interval_s``: unknown frames, malformed
and over-long requests, and real NG frames (cancelled after the first chunk, so the LLM never hogs the
cores); every request must get its final or error reply. A SUB collects every verdict and the heartbeats
(their ``dropped`` count).

RSS and open file descriptors of the service's process (``pid``, default this one; psutil) are sampled
throughout. After the warm-up (``warm_fraction`` of the stream: allocators, arenas and caches settle) a
least-squares line through the samples up to the last frame gives the slope, with its standard error, in
MB/min and files/min. A slope beyond its bound sets ``leak_suspected``: by default (:func:`leak_bound`) a
slope that adds more than 2 MB (2 files) over the measured window and at least 2 MB/min (2 files/min), so a
longer soak resolves a smaller leak. A healthy service is flat once warm, while a leak of a few KiB per
frame climbs steadily (``tests/test_soak.py`` injects one and shows the bound catches it). Nothing here
asserts: the caller decides what is acceptable.
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
from pydantic import BaseModel, Field

from lineguard.runtime.child_process import stop_process
from lineguard.runtime.curve import CurveClientConfig
from lineguard.runtime.line_config import LineConfig
from lineguard.runtime.messages import ExplainReply, ExplainRequest, Verdict
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
    rss_interval_s: float = 0.5  # RSS and open files sampled this often
    warm_fraction: float = 0.3  # slopes and growth are measured from this point of the run (allocators warm)
    drain_timeout_s: float = 60.0  # after the last frame: longest wait for the outstanding verdicts
    connect_timeout_s: float = 30.0  # longest wait for the service's first heartbeat (it may be starting)
    explain_interval_s: float = 1.0  # one explanation request this often (with an explanations endpoint)
    rss_slope_bound_mb_per_min: float | None = Field(None, gt=0, description="a steeper RSS slope once warm is a "
                                                     "leak; None: leak_bound(window, RSS_STEP_MB)")
    fds_slope_bound_per_min: float | None = Field(None, gt=0, description="a steeper open-files slope once warm "
                                                  "is a leak; None: leak_bound(window, FDS_STEP)")
    seed: int = 0

    @property
    def warm_s(self) -> float:
        """Seconds of the stream before the slopes start (allocators, arenas and caches settle)."""
        return self.warm_fraction * self.duration_s


# What a healthy service may still show in its measured window: the allocator grows in steps (an arena, a
# larger batch's buffers) that stop once every kind of message has been seen, and sockets come and go.
RSS_STEP_MB = 2.0
FDS_STEP = 2.0
MIN_RSS_BOUND_MB_PER_MIN = 2.0
MIN_FDS_BOUND_PER_MIN = 2.0


def leak_bound(window_s: float, step: float, floor: float) -> float:
    """The slope a leak must exceed to be told from healthy settling: adding more than ``step`` over the
    measured window, and at least ``floor`` per minute (a long soak resolves smaller leaks)."""
    return max(floor, step / max(window_s / 60.0, 1e-9))


class RssSample(BaseModel):
    t_s: float
    rss_mb: float
    open_files: int | None = None  # file descriptors (sockets, pipes, files) of the process; None: not on Linux


class Slope(BaseModel):
    """A least-squares line through the samples after the warm mark (transient spikes set aside)."""

    per_min: float  # units per minute
    stderr_per_min: float  # standard error of the slope
    samples: int
    outliers: int = 0  # samples set aside as transient spikes (beyond 5 median deviations of the first fit)


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
    rss_slope_stderr_mb_per_min: float = 0.0
    open_files_start: int | None = None  # at the warm mark
    open_files_end: int | None = None
    fds_slope_per_min: float | None = None  # least-squares slope of open files after the warm mark
    fds_slope_stderr_per_min: float | None = None
    rss_slope_bound_mb_per_min: float = 2.0  # the plan's bound, or leak_bound over the measured window
    fds_slope_bound_per_min: float = 2.0
    slope_window_s: float = 0.0  # the stream after the warm mark: what the slopes were fitted over
    leak_suspected: bool = False  # a slope beyond its bound
    leak_reasons: list[str] = Field(default_factory=list)
    explanation_requests: int = 0  # requests that each must get a final or an error reply
    explanation_replies: dict[str, int] = Field(default_factory=dict)  # final / cancelled / error code
    explanations_unanswered: int = 0
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


def _sample(process: object, t_s: float) -> RssSample:
    try:
        files = int(process.num_fds())  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # not on Linux/Unix
        files = None
    return RssSample(t_s=t_s, rss_mb=_rss_mb(process), open_files=files)


def fit_slope(t_s: Sequence[float], values: Sequence[float]) -> Slope:
    """Least-squares slope of ``values`` over ``t_s`` (seconds), per minute, with its standard error.

    A sample far off the first fit (beyond 5 median absolute deviations: a batch's buffers caught in flight)
    is set aside and the line fitted again; a leak is a trend through every sample, which this keeps."""
    t, y = np.asarray(t_s, float), np.asarray(values, float)
    if len(t) < 3 or np.ptp(t) <= 0:
        return Slope(per_min=0.0, stderr_per_min=0.0, samples=len(t))
    slope, intercept = np.polyfit(t, y, 1)
    residuals = y - (slope * t + intercept)
    deviation = np.abs(residuals - np.median(residuals))
    keep = deviation <= max(5 * 1.4826 * float(np.median(deviation)), 1e-9)
    if 3 <= keep.sum() < len(t) and np.ptp(t[keep]) > 0:
        slope, intercept = np.polyfit(t[keep], y[keep], 1)
        t, y = t[keep], y[keep]
        residuals = y - (slope * t + intercept)
    stderr = float(np.sqrt(residuals @ residuals / max(len(t) - 2, 1) / np.sum((t - t.mean()) ** 2)))
    return Slope(per_min=float(slope) * 60, stderr_per_min=stderr * 60, samples=len(t),
                 outliers=int(len(values) - len(t)))


class _Asker:
    """The explanation side of the stream: one DEALER, a request every interval, every reply counted."""

    QUESTION = "Why was this part rejected?"

    def __init__(self, context: zmq.Context, endpoint: str, curve: CurveClientConfig | None, seed: int) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.secure(self.sock)
        self.sock.connect(endpoint)
        self.rng = np.random.default_rng(seed)
        self.requests = 0
        self.replies: Counter[str] = Counter()
        self._cancel_after_chunk: set[str] = set()
        self.n = 0

    def ask(self, ng_frames: list[str]) -> None:
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
                self.replies[reply.error.code if reply.error else "error"] += 1
            else:
                self.replies["cancelled" if reply.finish_reason == "cancelled" else "final"] += 1

    @property
    def unanswered(self) -> int:
        return self.requests - sum(self.replies.values())

    def close(self) -> None:
        self.sock.close()


def run_soak(frames_endpoint: str, verdicts_endpoint: str, good: Sequence[np.ndarray],
             defects: Sequence[np.ndarray], product: str, plan: SoakPlan | None = None,
             pid: int | None = None, explanations: str | None = None,
             curve: CurveClientConfig | None = None) -> SoakResult:
    """Drive a running service (serving ``product``; process ``pid``) with the mixed stream; with
    ``explanations`` (its endpoint) explanation requests too; ``curve``: the client keys of a CURVE line."""
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

    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    if curve is not None:
        curve.secure(sub)
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
            rss.append(_sample(process, time.perf_counter() - start))

    asker = _Asker(context, explanations, curve, plan.seed) if explanations is not None else None

    def ask() -> None:
        assert asker is not None
        next_at = time.perf_counter() + plan.explain_interval_s
        while not stop_collecting.is_set():
            if not stop_sending.is_set() and time.perf_counter() >= next_at:
                next_at += plan.explain_interval_s
                with arrivals_lock:
                    ng = [frame for (_, frame), got in arrivals.items() if got[0][1].verdict == "NG"][-20:]
                asker.ask(ng)
            if asker.sock.poll(50):
                asker.read()

    def send(camera: _Camera, index: int) -> None:
        rng = np.random.default_rng(plan.seed * 1000 + index)
        kinds, weights = list(MIX), np.array(list(MIX.values()))
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.setsockopt(zmq.SNDHWM, 64)
        if curve is not None:
            curve.secure(push)
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

    start = time.perf_counter()  # the stream starts now: the wait for the service is not part of its warm-up
    rss.append(_sample(process, 0.0))
    threads = [threading.Thread(target=collect, name="soak-collect", daemon=True),
               threading.Thread(target=sample_rss, name="soak-rss", daemon=True)]
    if asker is not None:
        threads.append(threading.Thread(target=ask, name="soak-explain", daemon=True))
    helpers = len(threads)
    threads += [threading.Thread(target=send, args=(c, i), name=f"soak-{c.camera_id}", daemon=True)
                for i, c in enumerate(cameras)]
    for t in threads:
        t.start()
    try:
        time.sleep(plan.duration_s)
        stop_sending.set()
        for t in threads[helpers:]:
            t.join(10)
        expected = {(c.camera_id, f) for c in cameras for f in c.sent}
        unaddressable = sum(c.unaddressable for c in cameras)
        give_up = time.monotonic() + plan.drain_timeout_s

        def answered() -> bool:
            with arrivals_lock:
                every_frame = expected <= arrivals.keys()
            explained = asker is None or asker.unanswered <= 0
            return every_frame and dropped() >= unaddressable and explained

        while time.monotonic() < give_up and not answered():
            time.sleep(0.05)
        time.sleep(0.3)  # a duplicate would arrive now
        beat_at = beats[-1].seq
        beat_by = time.monotonic() + 5
        while time.monotonic() < beat_by and beats[-1].seq == beat_at:
            time.sleep(0.05)  # a heartbeat sent after the last verdict: its dropped count is final
    finally:
        stop_collecting.set()
        for t in threads[:helpers]:
            t.join(5)
        sub.close()
        if asker is not None:
            asker.close()
    rss.append(_sample(process, time.perf_counter() - start))
    result = _summarise(plan, cameras, arrivals, expected, unaddressable, dropped(), rss)
    if asker is not None:
        result.explanation_requests = asker.requests
        result.explanation_replies = dict(asker.replies)
        result.explanations_unanswered = asker.unanswered
    return result


def _summarise(plan: SoakPlan, cameras: list[_Camera], arrivals: dict[tuple[str, str], list[tuple[float, Verdict]]],
               expected: set[tuple[str, str]], unaddressable: int, dropped: int, rss: list[RssSample]) -> SoakResult:
    sent_at = {(c.camera_id, f): t for c in cameras for f, t in c.sent.items()}
    firsts = {key: got[0] for key, got in arrivals.items() if key in expected}
    classes = Counter(v.verdict for _, v in firsts.values())
    codes = Counter(v.error.code for _, v in firsts.values() if v.error is not None)
    inspected = [(t - sent_at[key]) * 1e3 for key, (t, v) in firsts.items() if v.verdict in ("OK", "NG")]
    ms = np.asarray(inspected or [float("nan")])
    warm_t = plan.warm_s
    # the fit covers the stream itself: from the warm mark until the last frame was sent (the drain after
    # it is idle time, which would flatten a leak's line)
    warm = [s for s in rss if warm_t <= s.t_s <= plan.duration_s] or [s for s in rss if s.t_s >= warm_t] or rss[-1:]
    rss_slope = fit_slope([s.t_s for s in warm], [s.rss_mb for s in warm])
    counted = [s for s in warm if s.open_files is not None]
    fds_slope = fit_slope([s.t_s for s in counted], [s.open_files or 0 for s in counted]) if counted else None
    window_s = max(plan.duration_s - warm_t, 0.0)
    rss_bound = plan.rss_slope_bound_mb_per_min or leak_bound(window_s, RSS_STEP_MB, MIN_RSS_BOUND_MB_PER_MIN)
    fds_bound = plan.fds_slope_bound_per_min or leak_bound(window_s, FDS_STEP, MIN_FDS_BOUND_PER_MIN)
    reasons = []
    if rss_slope.per_min > rss_bound:
        reasons.append(f"RSS grows {rss_slope.per_min:+.2f} MB/min (± {rss_slope.stderr_per_min:.2f}) once warm, "
                       f"beyond {rss_bound:.2f} MB/min")
    if fds_slope is not None and fds_slope.per_min > fds_bound:
        reasons.append(f"open files grow {fds_slope.per_min:+.2f}/min (± {fds_slope.stderr_per_min:.2f}) once warm, "
                       f"beyond {fds_bound:.2f}/min")
    return SoakResult(
        rss_slope_stderr_mb_per_min=rss_slope.stderr_per_min,
        open_files_start=counted[0].open_files if counted else None,
        open_files_end=rss[-1].open_files,
        fds_slope_per_min=fds_slope.per_min if fds_slope else None,
        fds_slope_stderr_per_min=fds_slope.stderr_per_min if fds_slope else None,
        rss_slope_bound_mb_per_min=rss_bound, fds_slope_bound_per_min=fds_bound, slope_window_s=window_s,
        leak_suspected=bool(reasons), leak_reasons=reasons,
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
        rss_growth_mb=rss[-1].rss_mb - warm[0].rss_mb, rss_slope_mb_per_min=rss_slope.per_min, rss=rss,
    )


def soak_serve_process(bundle_dir: str | os.PathLike[str], plan: SoakPlan, explanations: bool = True,
                       progress: bool = True) -> SoakResult:
    """``lineguard bench soak``: a ``lineguard serve`` process on loopback (a scratch copy of the bundle, a
    product enrolled from generated frames) driven by the mixed stream, with explanation requests when the
    bundle has an LLM and ``explanations``. RSS and open files are the service process's alone."""
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    from lineguard.runtime.bench_line import BENCH_PRODUCT, bench_frames
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.enroll import enroll_product

    def port() -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    images = bench_frames(12)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-bench-soak-") as bundle, \
            tempfile.TemporaryDirectory(prefix="lineguard-bench-soak-") as scratch:
        enroll_product(bundle, BENCH_PRODUCT, images[:4])
        ask = explanations and bundle.manifest.llm is not None
        endpoints = {name: port() for name in ("frames", "verdicts", "inspect", "explanations")}
        config = Path(scratch) / "line.yaml"
        config.write_text(yaml.safe_dump({
            "line": "soak", "products": [BENCH_PRODUCT], "deadline_ms": 2000, "heartbeat_interval_ms": 500,
            "endpoints": endpoints, "batching": {"max_batch": 4, "max_queue_delay_ms": 5},
            "archive": {"dir": str(Path(scratch) / "archive"), "max_bytes": 256 << 20},
            "explanations": {"enabled": ask, "max_tokens": 16, "max_pending": 2}, "http": {"enabled": False},
        }))
        log_path = Path(scratch) / "serve.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "lineguard.cli", "serve", str(bundle.root), "--config",
                                     str(config)], stdout=log, stderr=subprocess.STDOUT)
            try:
                if progress:
                    print(f"soak: `lineguard serve` (pid {proc.pid}), {plan.cameras} cameras x {plan.fps:.1f} "
                          f"frames/s mixed{' + explanation requests' if ask else ''}, {plan.duration_s:.0f} s",
                          file=sys.stderr, flush=True)
                return run_soak(endpoints["frames"], endpoints["verdicts"], good=images[4:],
                                defects=painted_defects(images[4:8]), product=BENCH_PRODUCT, plan=plan, pid=proc.pid,
                                explanations=endpoints["explanations"] if ask else None)
            except RuntimeError as exc:  # e.g. no heartbeat: say why the service did not come up
                log.flush()
                raise RuntimeError(f"{exc}\nlineguard serve output:\n{log_path.read_text()[-3000:]}") from exc
            finally:
                stop_process(proc)
