"""``lineguard bench line``: the line service over loopback ZeroMQ against direct in-process calls.

Usage::

    result = bench_line("bundles/default", frames=120, batch_sizes=(1, 8))
    result.zeromq_vs_direct        # {"1": 0.97, "8": 0.95}: transport + service overhead
    result.microbatch_gain         # ZeroMQ throughput at max_batch 8 over max_batch 1
    bench_line("bundles/default", with_curve=True).curve_vs_plain   # CURVE on every endpoint / off
    bench_line("bundles/default", burst=60).overload   # 60 frames at once (deadline-aware and plain), 2x, 5x

Both sides inspect the same raw 224x224 frames of a generated, enrolled product in the same run.
Direct: ``Inspector.analyze`` on batches of ``b``. ZeroMQ: a ``LineServer`` with ``max_batch = b``;
a camera PUSHes raw frames keeping a bounded number in flight (so the service is saturated but never
overloaded) and a subscriber times each verdict from send to arrival.

Then overload (lineguard.bench.burst, at the line defaults: ``max_batch`` 8, 200 ms deadline):
``burst`` frames at once, with deadline-aware batching and (``burst_plain_too``) without, and
``overload_factors`` x the measured capacity for a few seconds; each reports frames judged vs the ideal
(deadline x capacity for a burst), whether every frame got exactly one verdict, and the recovery after.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zmq
from pydantic import BaseModel
from tqdm import tqdm

from lineguard.bench.burst import OverloadRun, burst_run, measure_capacity, sustained_run
from lineguard.bench.rounds import Spread
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.clients.explain import ask
from lineguard.runtime.contract import HEARTBEAT_TOPIC, Verdict, encode_frame, new_header
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.runtime.security.curve import CurveClientConfig, CurveServerConfig, create_key_pair

BENCH_PRODUCT = "bench-line"


class LineRun(BaseModel):
    mode: str  # "direct" | "zeromq"
    max_batch: int
    frames: int
    frames_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


class LineBench(BaseModel):
    bundle_id: str
    frame_shape: tuple[int, int, int]
    runs: list[LineRun]
    zeromq_vs_direct: dict[str, float]
    microbatch_gain: float | None
    p99_with_explanations_ratio: float | None = None  # verdict p99 while explanations stream / without
    curve_vs_plain: dict[str, float] | None = None  # throughput with CURVE on every endpoint / without
    # the comparison in interleaved rounds (bench_line_rounds): runs and ratios above are medians
    rounds: int = 1
    zeromq_vs_direct_spread: dict[str, Spread] | None = None
    microbatch_gain_spread: Spread | None = None
    p99_with_explanations_spread: Spread | None = None
    overload: list[OverloadRun] = []  # bursts and sustained overload (bench_burst)


def bench_frames(count: int, size: int = 224, seed: int = 5) -> list[np.ndarray]:
    """Raw camera frames of a generated product (numpy + OpenCV only, like the runtime)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (size * 2, size * 2, 3), dtype=np.uint8)
    base = np.ascontiguousarray(np.repeat(np.repeat(base[::8, ::8], 8, 0), 8, 1)[: size * 2, : size * 2])
    offsets = rng.integers(0, size, (count, 2))
    return [np.ascontiguousarray(base[y : y + size, x : x + size]) for y, x in offsets]


def _run(mode: str, batch: int, latencies: list[float], elapsed: float) -> LineRun:
    ms = np.asarray(latencies) * 1e3
    return LineRun(mode=mode, max_batch=batch, frames=len(latencies), frames_per_s=len(latencies) / elapsed,
                   latency_p50_ms=float(np.percentile(ms, 50)), latency_p99_ms=float(np.percentile(ms, 99)))


def direct_run(inspector: Inspector, frames: Sequence[np.ndarray], batch: int) -> LineRun:
    latencies = []
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        t0 = time.perf_counter()
        chunk = frames[i : i + batch]
        inspector.analyze(chunk, BENCH_PRODUCT)
        latencies += [time.perf_counter() - t0] * len(chunk)
    return _run("direct", batch, latencies, time.perf_counter() - start)


def bench_keys(folder: Path) -> tuple[CurveServerConfig, CurveClientConfig]:
    """A server key pair and one allowed client key pair in ``folder``, for a run with CURVE on."""
    create_key_pair(folder, "server")
    public, secret = create_key_pair(folder, "bench-client")
    allowed = folder / "allowed"
    allowed.mkdir()
    public.rename(allowed / public.name)
    # the bench client pushes as every bench camera: grant it any camera id (a plant's keys name theirs)
    return (CurveServerConfig(server_secret_key_file=folder / "server.key_secret", allowed_clients_dir=allowed,
                              clients={"bench-client": {"cameras": ["*"]}}),
            CurveClientConfig(client_secret_key_file=secret, server_public_key_file=folder / "server.key"))


def zeromq_run(inspector: Inspector, frames: Sequence[np.ndarray], batch: int, timeout_s: float = 300.0,
               explain_archive: Path | None = None,
               curve: tuple[CurveServerConfig, CurveClientConfig] | None = None) -> LineRun:
    """``explain_archive``: also run the explanation port and keep asking it for answers while measuring;
    ``curve``: CURVE on every endpoint (server and client keys, from :func:`bench_keys`)."""
    loopback = "tcp://127.0.0.1:*"
    extra: dict[str, object] = {"security": {"curve": curve[0].model_dump()}} if curve is not None else {}
    if explain_archive is not None:
        extra |= {"archive": {"dir": str(explain_archive)}, "explanations": {"enabled": True, "max_pending": 2}}
    else:  # the plain runs measure verdicts only (and say nothing about a port they do not open)
        extra |= {"explanations": {"enabled": False}}
    client = curve[1] if curve is not None else None
    config = LineConfig(
        line="bench", endpoints={"frames": loopback, "verdicts": loopback, "inspect": loopback,
                                 "explanations": loopback},
        deadline_ms=60_000, batching={"max_batch": batch, "max_queue_delay_ms": 5.0, "max_queue": 256},
        hwm={"frames_rcv": 256, "verdicts_snd": 10_000}, **extra,
    )
    window = 2 * batch + 2  # enough queued to form full batches, never enough to overload
    context = zmq.Context.instance()
    # with CURVE the server gets a context of its own (one ZAP handler per context)
    with LineServer(inspector, config, context=None if curve is not None else context) as server:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 256)
        if client is not None:
            client.secure(sub)
            client.secure(push)
        sub.connect(server.endpoints.verdicts)
        push.connect(server.endpoints.frames)
        chatter: ExplanationLoad | None = None
        try:
            ready_by = time.monotonic() + 5
            while time.monotonic() < ready_by:  # subscribed once the first heartbeat arrives
                if sub.poll(200) and sub.recv_multipart()[0] == HEARTBEAT_TOPIC:
                    break
            payloads = [encode_frame(new_header("cam0", f"f{i}", BENCH_PRODUCT), f) for i, f in enumerate(frames)]
            if explain_archive is not None:
                chatter = ExplanationLoad(server, "warm-0", client)
                defect = frames[0].copy()
                defect[80:130, 90:140] = 255  # an NG frame: archived, so it can be explained
                push.send_multipart(encode_frame(new_header("cam0", "warm-0", BENCH_PRODUCT), defect))
                while not (sub.poll(30_000) and sub.recv_multipart()[0] != HEARTBEAT_TOPIC):
                    pass  # the frame the explanations are about is judged and archived
                chatter.start()
            sent_at: dict[str, float] = {}
            latencies: list[float] = []
            start = time.perf_counter()
            give_up = time.monotonic() + timeout_s
            next_frame = 0
            while len(latencies) < len(frames) and time.monotonic() < give_up:
                while next_frame < len(frames) and len(sent_at) < window:
                    sent_at[f"f{next_frame}"] = time.perf_counter()
                    push.send_multipart(payloads[next_frame], copy=False)
                    next_frame += 1
                if not sub.poll(1000):
                    continue
                topic, body = sub.recv_multipart()
                if topic == HEARTBEAT_TOPIC:
                    continue
                verdict = Verdict.model_validate_json(body)
                if verdict.frame_id in sent_at:
                    latencies.append(time.perf_counter() - sent_at.pop(verdict.frame_id))
            elapsed = time.perf_counter() - start
        finally:
            if chatter is not None:
                chatter.stop()
            sub.close()
            push.close()
    if len(latencies) < len(frames):
        raise RuntimeError(f"only {len(latencies)} of {len(frames)} verdicts arrived over ZeroMQ")
    return _run("zeromq", batch, latencies, elapsed)


class ExplanationLoad:
    """Asks for explanations back to back on a thread: the load a busy touch panel puts on the line."""

    def __init__(self, server: LineServer, frame_id: str, curve: CurveClientConfig | None = None) -> None:
        self.server, self.frame_id, self.curve = server, frame_id, curve
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="explanation-load", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            replies = list(ask(self.server.endpoints.explanations, self.frame_id, idle_timeout_s=60, curve=self.curve))
            self.answers += replies[-1].type == "final"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)


def bench_line(bundle_dir: str | Path, frames: int = 120, batch_sizes: Sequence[int] = (1, 8),
               with_explanations: bool = False, with_curve: bool = False, burst: int = 0,
               overload_factors: Sequence[float] = (2.0, 5.0), burst_plain_too: bool = True,
               rounds: int = 5) -> LineBench:
    """``with_curve``: also run every batch size with CURVE on every endpoint (``zeromq+curve`` runs);
    ``burst``: frames of the burst scenario (``lineguard bench line`` asks for 60; 0: no overload scenarios);
    ``rounds``: direct vs ZeroMQ (and with explanations) as interleaved rounds: runs are the median round,
    each ratio the median with its min-max (``*_spread``)."""
    from lineguard.bench.line_rounds import line_rounds  # built on this module's runs
    images = bench_frames(frames + 4)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-bench-line-") as bundle:
        inspector = Inspector(bundle)
        enroll_product(bundle, BENCH_PRODUCT, images[:4], chain=inspector.chain)
        test_frames = images[4:]
        inspector.analyze(test_frames[:2], BENCH_PRODUCT)  # warm-up
        if with_explanations and bundle.manifest.llm is None:
            raise ValueError("--with-explanations needs an LLM in the bundle: lineguard export llm BUNDLE")
        rounded = line_rounds(inspector, test_frames, batch_sizes, rounds=rounds,
                              explain_archive=bundle.root.parent / "archive" if with_explanations else None)
        runs = [LineRun(mode=r.mode, max_batch=r.max_batch, frames=r.frames, frames_per_s=r.frames_per_s.median,
                        latency_p50_ms=r.latency_p50_ms.median, latency_p99_ms=r.latency_p99_ms.median)
                for r in rounded.runs]
        explained = next((r for r in runs if r.mode == "zeromq+explanations"), None)
        for batch in tqdm(batch_sizes if with_curve else (), desc="bench line, CURVE", unit="batch size"):
            with tempfile.TemporaryDirectory(prefix="lineguard-bench-keys-") as keys:
                secured = zeromq_run(inspector, test_frames, batch, curve=bench_keys(Path(keys)))
            runs.append(secured.model_copy(update={"mode": "zeromq+curve"}))
        overload = overload_runs(inspector, test_frames, burst, overload_factors, burst_plain_too)
    by = {(r.mode, r.max_batch): r for r in runs}
    ratios = {b: spread.median for b, spread in rounded.zeromq_vs_direct.items()}
    gain = rounded.microbatch_gain.median if rounded.microbatch_gain is not None else None
    p99_ratio = None
    if rounded.p99_with_explanations_ratio is not None and explained is not None:
        p99_ratio = rounded.p99_with_explanations_ratio.median
    curve_ratios = None
    if with_curve:
        curve_ratios = {str(b): by["zeromq+curve", b].frames_per_s / by["zeromq", b].frames_per_s for b in batch_sizes}
    return LineBench(bundle_id=bundle.manifest.bundle_id, frame_shape=tuple(images[0].shape), runs=runs,
                     zeromq_vs_direct=ratios, microbatch_gain=gain, p99_with_explanations_ratio=p99_ratio,
                     curve_vs_plain=curve_ratios, overload=overload, rounds=rounds,
                     zeromq_vs_direct_spread=rounded.zeromq_vs_direct, microbatch_gain_spread=rounded.microbatch_gain,
                     p99_with_explanations_spread=rounded.p99_with_explanations_ratio)


def overload_runs(inspector: Inspector, frames: Sequence[np.ndarray], burst: int,
                  factors: Sequence[float], plain_too: bool) -> list[OverloadRun]:
    """The burst (deadline-aware, then plain if asked) and each sustained overload factor."""
    if burst < 1:
        return []
    capacity = measure_capacity(inspector, frames, BENCH_PRODUCT)
    runs = [burst_run(inspector, frames, BENCH_PRODUCT, capacity, count=burst)]
    if plain_too:
        runs.append(burst_run(inspector, frames, BENCH_PRODUCT, capacity, count=burst, deadline_aware=False))
    runs += [sustained_run(inspector, frames, BENCH_PRODUCT, capacity, factor=f) for f in factors]
    return runs
