"""The line service: frames in over ZeroMQ, one verdict out per frame, heartbeats, graceful stop.

Usage::

    from lineguard.runtime.line_config import LineConfig
    from lineguard.runtime.server import LineServer

    server = LineServer.from_bundle("bundles/default", LineConfig.from_yaml("deploy/line.example.yaml"))
    server.run()                      # foreground: warm up, bind, serve until Ctrl-C / request_stop()

    server = LineServer(inspector, config).start()    # background thread; returns once ready
    server.endpoints.frames           # the bound address (``tcp://127.0.0.1:*`` binds a free port)
    server.stop()                     # stop intake, drain in-flight frames, close the sockets

Sockets (DESIGN.md section 4), all owned by the one loop thread, each with explicit HWM and LINGER:

* frames  PULL    ``[header JSON, payload]`` from cameras (PUSH);
* inspect ROUTER  the same frame behind a REQ or DEALER envelope; the reply is the envelope as received
  (``[identity, b"", verdict JSON]`` for REQ) followed by the Verdict JSON;
* verdicts PUB    ``[verdict.<line>.<camera>, Verdict JSON]`` for every frame (inspect ones too) and
  ``[heartbeat, Heartbeat JSON]`` every ``heartbeat_interval_ms``.

Every message read gets exactly one verdict: inspection result, TIMEOUT (deadline counted from receipt),
or ERROR with a stable code (bad input, OVERLOADED when the bounded queue is full, SHUTTING_DOWN while
draining). Only a frame too broken to name its camera goes unanswered on PUB; it is counted as dropped
(an inspect request always gets its reply). ``seq`` numbers every published verdict of this server
from 1, without gaps; a restart is a new ``boot_id`` and seq starts over, while lifetime totals
continue through ``state_file`` (lineguard.runtime.line_state). The loop only parses headers;
decoding and inference run on the batcher's threads.

With ``security.curve`` every socket (the explanation port too) is a CURVE server whose clients a ZAP
allow-list checks per endpoint (lineguard.runtime.curve_auth); the server then uses a ZeroMQ context of its
own (one ZAP handler per context) and the heartbeat's ``auth_denied`` counts refused handshakes. Each frame
carries its sender's key name (ZAP User-Id): a frame claiming a camera its key may not speak for is answered
``ERROR``/``CAMERA_NOT_ALLOWED`` (inspect: the reply) and counted (``camera_denied``), never published on
that camera's topic. Every receiving socket has ``MAXMSGSIZE`` (frames and inspect: twice the header +
payload limit): libzmq disconnects a peer that announces a larger message before buffering it, while a
message just beyond the limits is still read and answered OVERSIZE, so a misconfigured camera learns why.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np
import zmq

from lineguard.runtime.archive import FrameArchive
from lineguard.runtime.batcher import BatcherClosed, FrameRequest, MicroBatcher
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.chain import VisionChain
from lineguard.runtime.curve import CurveError
from lineguard.runtime.curve_auth import UNKNOWN_CLIENT, CurveAuthority
from lineguard.runtime.drift_monitor import DriftMonitor
from lineguard.runtime.explain_server import ExplanationServer
from lineguard.runtime.inspector import Inspector, UnknownProductError
from lineguard.runtime.line_config import Endpoints, LineConfig
from lineguard.runtime.line_state import BootRecord, LineState, LineStateError, LineStateFile, Totals
from lineguard.runtime.llm_judge import LlmJudge
from lineguard.runtime.llm_worker import LlmSettings, LlmWorker, LlmWorkerError
from lineguard.runtime.messages import Verdict
from lineguard.runtime.metrics import LineMetrics
from lineguard.runtime.ort_threading import threading_for_line
from lineguard.runtime.wire import (
    HEARTBEAT_TOPIC,
    ErrorCode,
    FrameError,
    FrameHeader,
    FrameIds,
    Heartbeat,
    decode_payload,
    error_verdict,
    parse_header,
    verdict_topic,
)

log = logging.getLogger(__name__)

READ_BURST = 64  # messages read from one socket before the loop looks at the others
MAX_SUBSCRIPTION_BYTES = 4096  # PUB reads subscriptions only; a topic is ~200 bytes at most


class ServerError(RuntimeError):
    """The service could not start (bind failed, product not enrolled, warm-up failed)."""


def max_message_bytes(config: LineConfig) -> int:
    """``MAXMSGSIZE`` of the frames and inspect sockets: twice the header plus the payload limit (libzmq applies
    it to each part of a message; a larger part disconnects its sender before it is buffered). Up to there a
    frame beyond the limits is read and answered OVERSIZE: a camera sending slightly too large images learns
    why, while no peer can make the service buffer more than twice what a frame may cost."""
    return 2 * (config.limits.max_header_bytes + config.limits.max_payload_bytes)


def split_envelope(parts: Sequence[zmq.Frame]) -> tuple[list[bytes], list[zmq.Frame]]:
    """ROUTER message -> (envelope, body). The envelope runs up to and including the first empty frame
    (REQ, and DEALERs that mimic it); without one it is the identity alone (bare DEALER)."""
    for i, part in enumerate(parts):
        if len(part) == 0:
            return [p.bytes for p in parts[: i + 1]], list(parts[i + 1 :])
    return [parts[0].bytes], list(parts[1:])


class LineServer:
    def __init__(self, inspector: Inspector, config: LineConfig, context: zmq.Context | None = None) -> None:
        self.inspector = inspector
        self.config = config
        curve = config.security.curve
        self._own_context = curve is not None and context is None  # one ZAP handler per context: its own
        self.context = context or (zmq.Context() if curve is not None else zmq.Context.instance())
        try:
            self.curve = CurveAuthority(curve, self.context) if curve is not None else None
        except CurveError as exc:
            raise ServerError(f"line {config.line}: security.curve: {exc}") from None
        self.bundle_id = inspector.bundle.manifest.bundle_id
        if abs(inspector.false_reject_budget - config.false_reject_budget) > 1e-12:
            log.warning("inspector false-reject budget %g differs from the line's %g; the inspector's is used",
                        inspector.false_reject_budget, config.false_reject_budget)
        self.served = set(config.products or inspector.products)
        b = config.batching
        a = config.archive
        self.archive = FrameArchive(a.dir, a.max_bytes, a.ok_sample_every) if a.dir is not None else None
        self.judge = self._llm_judge()
        self.batcher = MicroBatcher(inspector, self._on_verdict, b.max_batch, b.max_queue_delay_ms,
                                    b.max_queue, b.workers, self.bundle_id, archive=self.archive,
                                    judge=self.judge, judged_products=frozenset(config.llm_verdict),
                                    deadline_aware=b.deadline_aware, margin_deviations=b.latency_margin_deviations,
                                    mm_per_pixel={c: cam.mm_per_pixel for c, cam in config.cameras.items()
                                                  if cam.mm_per_pixel is not None})
        self.endpoints = config.endpoints.model_copy()  # replaced by the bound addresses at start
        self.boot_id = uuid.uuid4().hex[:12]
        self._started_ns = time.time_ns()
        self.state_file = LineStateFile(config.state_file, config.line) if config.state_file is not None else None
        self.before = self._load_state()  # the earlier boots: lifetime totals and the previous boot's record
        self._state_failing = False
        self.seq = 0
        self.heartbeat_seq = 0
        self.frames_in = 0
        self.replies_out = 0
        self.dropped = 0
        self.camera_denied = 0  # frames whose key may not speak for their camera (CAMERA_NOT_ALLOWED)
        self.errors: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self._counting = threading.Lock()  # the loop adds keys; heartbeat() may copy from another thread
        self._outbox: deque[tuple[Verdict, list[bytes] | None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._draining = False
        self._started_at = time.monotonic()
        self._loop_tick = time.monotonic()
        self.explanations: ExplanationServer | None = None
        self.drift = DriftMonitor(inspector.false_reject_budget, config.drift)  # the budget verdicts are made with
        self.metrics = LineMetrics(self.heartbeat)

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike[str], config: LineConfig) -> LineServer:
        """Open the bundle (its signature checked when the line names a ``security.bundle_public_key``), run
        its models on the backend ``config.inference`` asks for, with the line's false-reject budget."""
        opened = Bundle.open(bundle, trusted_key=config.security.bundle_public_key)
        inference = config.inference
        threads = threading_for_line(config, has_llm=opened.manifest.llm is not None)
        chain = VisionChain(opened, backend=inference.backend, triton_url=inference.triton_url,
                            triton_model=inference.triton_model, engine_cache_dir=inference.engine_cache_dir,
                            precisions=inference.precisions, threads=threads, cpu_precision=inference.cpu_precision,
                            products=config.products or None)
        log.info("line %s: inference backend %s", config.line, chain.backend.summary())
        if chain.backend.backend == "onnxruntime":
            log.info("line %s: onnxruntime %s", config.line, threads.summary())
        return cls(Inspector(opened, false_reject_budget=config.false_reject_budget, chain=chain), config)

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the models are warmed up and the sockets bound; False again while stopping."""
        return self._ready.is_set() and not self._stop.is_set()

    def readiness(self) -> dict[str, bool]:
        """What ``/readyz`` checks, each by name: ready only when every one is True."""
        checks = {
            "bundle_loaded": True,  # this object exists only once the inspector has opened the bundle
            "sockets_bound": self._ready.is_set(),
            "accepting_frames": self.ready and not self._draining,
            "inference_workers": self.batcher.workers_alive == self.config.batching.workers,
        }
        if self.judge is not None:
            checks["llm_judge"] = self.judge.worker.alive
        if self.explanations is not None:
            checks["explanations"] = self.explanations.worker.alive
        return checks

    def loop_turning(self, within_s: float | None = None) -> bool:
        """The serving loop went round within ``within_s`` (default: three heartbeat intervals). It wakes at
        least once per heartbeat, so a loop stuck in a call (a hung socket, a deadlock) fails this."""
        limit = within_s if within_s is not None else 3 * self.config.heartbeat_interval_ms / 1e3
        return time.monotonic() - self._loop_tick <= limit

    @property
    def loop_failed(self) -> bool:
        """The serving loop ended on an error (liveness: the process should be restarted)."""
        return self._finished.is_set() and self._failure is not None

    def start(self, timeout_s: float = 120.0) -> LineServer:
        """Serve on a background thread; returns once ready, raises ServerError if start-up failed."""
        if self._thread is not None:
            raise ServerError("this server has already been started")
        self._thread = threading.Thread(target=self._run_guarded, name=f"line-{self.config.line}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self._finished.is_set() or time.monotonic() > deadline:
                self.stop()
                if isinstance(self._failure, ServerError):
                    raise self._failure
                raise ServerError(f"line {self.config.line} did not start: {self._failure or 'timed out'}")
        return self

    def request_stop(self) -> None:
        """Ask the loop to stop (safe from signal handlers and other threads); returns at once."""
        self._stop.set()
        self._wake()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake, drain in-flight frames (verdicts or TIMEOUT), close the sockets; wait for it."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.config.drain_timeout_ms / 1e3 + 5.0)
        if self._failure is not None and not isinstance(self._failure, ServerError):
            log.error("line %s loop ended with %r", self.config.line, self._failure)

    def __enter__(self) -> LineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """Warm up, bind, serve until request_stop() (or Ctrl-C), drain, close. Blocks."""
        self._started_at = time.monotonic()
        try:
            self._warm_up()
            if self.curve is not None:
                self.curve.start()  # the ZAP handler answers before any socket is bound
            sockets = self._bind()
            self.batcher.start()
            try:
                self._start_explanations()
                self._ready.set()
                log.info("line %s ready: frames %s, inspect %s, verdicts %s", self.config.line,
                         self.endpoints.frames, self.endpoints.inspect, self.endpoints.verdicts)
                self._serve(*sockets)
            finally:
                self._ready.clear()
                self.batcher.close(timeout_s=0.0)  # no-op after a clean drain
                if self.explanations is not None:
                    self.explanations.stop()
                if self.judge is not None:
                    self.judge.worker.close()
                for s in sockets:
                    s.close()
        finally:
            if self.curve is not None:
                self.curve.stop()  # only after every secured socket is closed
            if self._own_context:
                self.context.term()
            self._wake_r.close()
            self._wake_w.close()

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self._failure = exc
            log.exception("line %s stopped on an error", self.config.line)
        finally:
            self._finished.set()

    # -- start-up -----------------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Load every served product and run it at batch 1 and at max_batch, so neither the first frame
        nor the first full batch pays for lazy set-up (allocations, an execution provider's engine build);
        the batcher times a few batch sizes too (the latency its deadline-aware batches are planned with)."""
        h, w = self.inspector.input_size
        for product in sorted(self.served) or [None]:
            try:
                self.batcher.warm_up(np.full((h, w, 3), 127, np.uint8), product)
            except UnknownProductError as exc:
                raise ServerError(f"line {self.config.line}: {exc}") from None

    def _load_state(self) -> LineState:
        if self.state_file is None:
            return LineState(line=self.config.line)
        try:
            return self.state_file.load()
        except LineStateError as exc:
            raise ServerError(f"line {self.config.line}: {exc}") from None

    def _save_state(self, clean_stop: bool = False) -> None:
        """Lifetime totals and this boot's record to ``state_file`` (loop thread); a failure is logged once."""
        if self.state_file is None:
            return
        beat = self.heartbeat()
        boot = BootRecord(boot_id=self.boot_id, started_ns=self._started_ns, last_verdict_seq=self.seq,
                          clean_stop=clean_stop)
        try:
            self.state_file.save(LineState(line=self.config.line, totals=beat.lifetime or Totals(), last_boot=boot),
                                 durable=clean_stop)  # periodic saves skip fsync: this is the loop thread
        except OSError as exc:
            if not self._state_failing:
                log.error("line %s: cannot write state file %s (%s); lifetime counters are not being kept",
                          self.config.line, self.state_file.path, exc)
            self._state_failing = True
        else:
            self._state_failing = False

    def _llm_judge(self) -> LlmJudge | None:
        """A model process of its own for ``llm_verdict`` products (explanations never queue ahead of it)."""
        if not self.config.llm_verdict:
            return None
        llm = self.inspector.bundle.manifest.llm
        if llm is None:
            raise ServerError(f"line {self.config.line}: llm_verdict needs an LLM in the bundle (lineguard export llm)")
        settings = LlmSettings(n_threads=self.config.explanations.threads, max_tokens=4, nice=0)
        self.inspector.image_evidence = True  # the judge sees every frame's evidence, never the vision verdict
        try:
            return LlmJudge(LlmWorker(self.inspector.bundle.path(llm.file), settings).start())
        except LlmWorkerError as exc:
            raise ServerError(f"line {self.config.line}: {exc}") from None

    def _start_explanations(self) -> None:
        """The LLM port, in its own thread with the model in its own process, when the bundle has one."""
        cfg = self.config.explanations
        llm = self.inspector.bundle.manifest.llm
        if not cfg.enabled or llm is None:
            return
        if self.archive is None:
            log.warning("explanations need archive.dir (they explain archived frames): port %s not opened",
                        self.config.endpoints.explanations)
            return
        settings = LlmSettings(n_ctx=cfg.context_tokens, n_threads=cfg.threads, max_tokens=cfg.max_tokens,
                               max_seconds=cfg.max_seconds)
        try:
            worker = LlmWorker(self.inspector.bundle.path(llm.file), settings).start()
        except LlmWorkerError as exc:
            raise ServerError(f"line {self.config.line}: {exc}") from None
        self.explanations = ExplanationServer(self.config.endpoints.explanations, self.archive, worker, cfg.max_pending,
                                              cfg.max_tokens, self.context,
                                              on_reply=self.metrics.observe_explanation,
                                              max_question_chars=cfg.max_question_chars,
                                              max_request_bytes=cfg.max_request_bytes,
                                              secure=self.curve.secure if self.curve is not None else None).start()
        self.endpoints = self.endpoints.model_copy(update={"explanations": self.explanations.endpoint})

    def _socket(self, kind: int, rcvhwm: int | None = None, sndhwm: int | None = None,
                max_message: int | None = None) -> zmq.Socket:
        s = self.context.socket(kind)
        s.setsockopt(zmq.LINGER, self.config.linger_ms)
        if max_message is not None:  # libzmq drops a peer announcing a larger message part, before buffering it
            s.setsockopt(zmq.MAXMSGSIZE, max_message)
        if rcvhwm is not None:
            s.setsockopt(zmq.RCVHWM, rcvhwm)
        if sndhwm is not None:
            s.setsockopt(zmq.SNDHWM, sndhwm)
        return s

    def _bind(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        hwm = self.config.hwm
        largest = max_message_bytes(self.config)
        frames = self._socket(zmq.PULL, rcvhwm=hwm.frames_rcv, max_message=largest)
        inspect = self._socket(zmq.ROUTER, rcvhwm=hwm.inspect_rcv, sndhwm=hwm.inspect_snd, max_message=largest)
        verdicts = self._socket(zmq.PUB, sndhwm=hwm.verdicts_snd, max_message=MAX_SUBSCRIPTION_BYTES)
        bound = {}
        try:
            for name, sock in (("frames", frames), ("inspect", inspect), ("verdicts", verdicts)):
                endpoint = getattr(self.config.endpoints, name)
                if self.curve is not None:
                    self.curve.secure(sock, name)
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise ServerError(f"line {self.config.line}: cannot bind {name} to {endpoint}: {exc}") from None
                bound[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            for s in (frames, inspect, verdicts):
                s.close(linger=0)
            raise
        self.endpoints = Endpoints(**bound)
        return frames, inspect, verdicts

    # -- the loop -----------------------------------------------------------------------------------

    def _serve(self, frames: zmq.Socket, inspect: zmq.Socket, verdicts: zmq.Socket) -> None:
        self._pub, self._router = verdicts, inspect
        poller = zmq.Poller()
        poller.register(frames, zmq.POLLIN)
        poller.register(inspect, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        interval = self.config.heartbeat_interval_ms / 1e3
        next_beat = time.monotonic()
        drain_until: float | None = None
        while True:
            try:
                now = time.monotonic()
                self._loop_tick = now  # the watchdog's proof that this loop still turns
                wait_ms = max(0.0, (next_beat - now) * 1e3)
                if drain_until is not None:
                    wait_ms = min(wait_ms, 10.0)
                events = dict(poller.poll(wait_ms))
                if frames in events:
                    self._read(frames, routed=False)
                if inspect in events:
                    self._read(inspect, routed=True)
                if self._wake_r.fileno() in events:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                self._flush()
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = max(next_beat + interval, now)
                if self._stop.is_set():
                    if drain_until is None:
                        drain_until = now + self.config.drain_timeout_ms / 1e3
                        self._draining = True
                        self.batcher.stop_intake()
                        log.info("line %s draining %d frames", self.config.line,
                                 self.batcher.queued + self.batcher.in_flight)
                    if (self.batcher.idle and not self._outbox) or now >= drain_until:
                        break
            except KeyboardInterrupt:
                self._stop.set()
        self.batcher.close(timeout_s=0.0)  # whatever is still waiting: TIMEOUT
        self._flush()
        self._heartbeat()
        self._save_state(clean_stop=True)
        log.info("line %s stopped: %d frames in, %d verdicts, %d dropped", self.config.line,
                 self.frames_in, self.seq, self.dropped)

    def _read(self, sock: zmq.Socket, routed: bool) -> None:
        for _ in range(READ_BURST):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.frames_in += 1
            envelope: list[bytes] | None = None
            try:
                if routed:
                    envelope, parts = split_envelope(parts)
                self._accept(parts, envelope)
            except Exception as exc:  # a bug in handling one message must not stop the line
                log.exception("could not handle a message")
                self._deliver(error_verdict(FrameIds(), ErrorCode.INTERNAL, repr(exc), self.bundle_id), envelope)

    def _accept(self, parts: list[zmq.Frame], envelope: list[bytes] | None) -> None:
        received = time.monotonic()
        limits = self.config.limits
        try:
            try:
                header = parse_header(parts, limits)
            except FrameError as exc:  # even a refusal is published on the camera's topic: only its keys may
                self._check_camera(parts, exc.ids)
                raise
            self._check_camera(parts, header)
            product = self.config.product_for(header.camera_id, header.product)
            header = header.model_copy(update={"product": product})
            if product is None and not self.config.zero_shot:
                raise FrameError(ErrorCode.UNKNOWN_PRODUCT, "the frame names no product and the line "
                                 "does not judge zero-shot", header)
            if product is not None and product not in self.served:
                raise FrameError(ErrorCode.UNKNOWN_PRODUCT, f"product {product!r} is not served on line "
                                 f"{self.config.line}; served: {sorted(self.served)}", header)
            if self._draining:
                raise FrameError(ErrorCode.SHUTTING_DOWN, "the line is shutting down", header)
            request = FrameRequest(
                header.camera_id, header.frame_id, product,
                deadline=received + self.config.deadline_for(header.camera_id) / 1e3,
                load=functools.partial(decode_payload, header, parts[1], limits),
                received=received, context=envelope,
            )
            try:
                accepted = self.batcher.submit(request)
            except BatcherClosed:
                raise FrameError(ErrorCode.SHUTTING_DOWN, "the line is shutting down", header) from None
            if not accepted:
                raise FrameError(ErrorCode.OVERLOADED,
                                 f"{self.batcher.max_queue} frames already waiting for inference", header)
        except FrameError as exc:
            verdict = error_verdict(exc.ids, exc.code, exc.message, self.bundle_id)
            verdict.latency_ms.total = (time.monotonic() - received) * 1e3
            self._deliver(verdict, envelope)

    def _check_camera(self, parts: Sequence[zmq.Frame], ids: FrameIds | FrameHeader) -> None:
        """With CURVE: the sender's key (its ZAP User-Id) must be allowed to speak for the camera it names."""
        if self.curve is None or not ids.camera_id or not parts:
            return
        try:
            client = parts[0].get("User-Id")
        except (zmq.ZMQError, AttributeError):  # no metadata: not a message from a CURVE peer
            client = UNKNOWN_CLIENT
        if not self.curve.grant(client).may_claim(ids.camera_id):
            raise FrameError(ErrorCode.CAMERA_NOT_ALLOWED, f"key {client!r} may not speak for camera "
                             f"{ids.camera_id!r} (security.curve.clients)", ids)

    def _on_verdict(self, request: FrameRequest, verdict: Verdict) -> None:
        """Batcher threads hand verdicts to the loop thread (the only one that touches sockets)."""
        self._outbox.append((verdict, request.context))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: the loop is woken already; closed: done
            self._wake_w.send(b"\0")

    def _flush(self) -> None:
        while self._outbox:
            verdict, envelope = self._outbox.popleft()
            self._deliver(verdict, envelope)

    def _deliver(self, verdict: Verdict, envelope: list[bytes] | None) -> None:
        """Publish (when the camera is known) and reply (inspect requests); count a frame neither can reach."""
        denied = verdict.error is not None and verdict.error.code == ErrorCode.CAMERA_NOT_ALLOWED.value
        with self._counting:
            if verdict.error is not None:
                self.errors[verdict.error.code] += 1
            if denied:
                self.camera_denied += 1
            elif not verdict.camera_id and envelope is None:
                self.dropped += 1
            else:
                self.verdicts[verdict.verdict] += 1
        self.metrics.observe_verdict(verdict)
        self.drift.observe(verdict)  # calibrated few-shot OK/NG only
        if denied:  # never on the camera's topic: the claim is what was refused
            if self.camera_denied & (self.camera_denied - 1) == 0:  # 1st, 2nd, 4th, ...: a flood cannot fill the log
                log.warning("refused frame %s/%s: %s (%d so far)", verdict.camera_id, verdict.frame_id,
                            verdict.error.message if verdict.error else "", self.camera_denied)
            if envelope is not None:
                self._reply(envelope, verdict.model_dump_json().encode(), verdict)
            return
        if not verdict.camera_id and envelope is None:
            log.warning("dropped a frame too broken to address: %s", verdict.error.message if verdict.error else "")
            return
        if verdict.camera_id:
            self.seq += 1
            verdict = verdict.model_copy(update={"seq": self.seq})
        body = verdict.model_dump_json().encode()
        if verdict.camera_id:
            with contextlib.suppress(zmq.Again):  # PUB does not block; a full subscriber just misses it
                self._pub.send_multipart([verdict_topic(self.config.line, verdict.camera_id), body], zmq.NOBLOCK)
        if envelope is not None:
            self._reply(envelope, body, verdict)

    def _reply(self, envelope: list[bytes], body: bytes, verdict: Verdict) -> None:
        try:
            self._router.send_multipart([*envelope, body], zmq.NOBLOCK)
            self.replies_out += 1
        except zmq.ZMQError as exc:  # client gone or its queue full: ROUTER cannot deliver
            log.warning("inspect reply for %s/%s not delivered: %s", verdict.camera_id, verdict.frame_id, exc)

    def _heartbeat(self) -> None:
        self.heartbeat_seq += 1
        self._reload_calibration()
        beat = self.heartbeat()
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart([HEARTBEAT_TOPIC, beat.model_dump_json().encode()], zmq.NOBLOCK)
        self._save_state()

    def _reload_calibration(self) -> None:
        """`lineguard enroll`/`calibrate` wrote the bundle: take the new calibration without a restart.
        A bundle caught half-written or tampered keeps serving what was loaded (and says so)."""
        try:
            if self.inspector.reload_products():
                self.drift.reset()  # the old windows were judged against the calibration that was replaced
                log.info("bundle products re-read (re-enrolment or new calibration normals)")
        except Exception as exc:  # never let a bad write on disk stop the line
            log.warning("bundle changed on disk but could not be re-read, serving the loaded products: %s", exc)

    def heartbeat(self) -> Heartbeat:
        """The service's health now (what the next heartbeat message carries). Safe from any thread."""
        with self._counting:
            verdicts, errors = dict(self.verdicts), dict(self.errors)
        archive_failures = self.archive.failures if self.archive is not None else 0
        lifetime = None
        if self.state_file is not None:
            this_boot = Totals(boots=1, frames_in=self.frames_in, verdicts_out=self.seq, replies_out=self.replies_out,
                               dropped=self.dropped, archive_failures=archive_failures, verdicts=verdicts,
                               errors=errors)
            lifetime = self.before.totals.plus(this_boot)
        drift = self.drift.snapshot()
        return Heartbeat(
            drift=drift.windows, drift_alarms=drift.alarms,
            line=self.config.line, boot_id=self.boot_id, seq=self.heartbeat_seq, timestamp_ns=time.time_ns(),
            interval_ms=self.config.heartbeat_interval_ms, uptime_s=time.monotonic() - self._started_at,
            ready=self.ready, draining=self._draining, queue_depth=self.batcher.queued,
            in_flight=self.batcher.in_flight, frames_in=self.frames_in, verdicts_out=self.seq,
            replies_out=self.replies_out, last_verdict_seq=self.seq, dropped=self.dropped,
            verdicts=verdicts, errors=errors, archive_failures=archive_failures,
            worker_restarts=self.batcher.worker_restarts, auth_denied=self.curve.denied if self.curve else 0,
            camera_denied=self.camera_denied, lifetime=lifetime, previous_boot=self.before.last_boot,
        )
