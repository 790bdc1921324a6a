"""The line service: frames in over ZeroMQ, one verdict out per frame, heartbeats, graceful stop.

Usage::

    from lineguard.runtime.line.config import LineConfig
    from lineguard.runtime.line.server import LineServer

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
continue through ``state_file`` (lineguard.runtime.line.counters). The loop only parses headers;
decoding and inference run on the batcher's threads (lineguard.runtime.line.batcher).

With ``security.curve`` every socket (the explanation port too) is a CURVE server whose clients a ZAP
allow-list checks per endpoint (lineguard.runtime.security.curve_auth), on a ZeroMQ context of the server's
own (one ZAP handler per context); a frame claiming a camera its key may not speak for is answered
``ERROR``/``CAMERA_NOT_ALLOWED``, never published on that camera's topic (lineguard.runtime.line.admission).
Socket limits (``MAXMSGSIZE``, HWM): lineguard.runtime.line.sockets.

This module owns the serving loop (read, accept, heartbeat, drain) and wires the parts, each in a module of
its own: admission, the batcher, the publisher (seq), the optional parts a config asks for (CURVE, archive,
LLM judge, explanation port: assembly), counters and the state file (counters), lifecycle and readiness.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque

import numpy as np
import zmq

from lineguard.runtime.contract import ErrorCode, FrameError, FrameIds, Heartbeat, Verdict
from lineguard.runtime.line import assembly
from lineguard.runtime.line.admission import Admission
from lineguard.runtime.line.assembly import ServerError
from lineguard.runtime.line.batcher import MicroBatcher
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.counters import LineCounters, LineStateKeeper
from lineguard.runtime.line.drift_monitor import DriftMonitor
from lineguard.runtime.line.metrics import LineMetrics
from lineguard.runtime.line.pending import BatcherClosed, FrameRequest, refusal
from lineguard.runtime.line.publisher import Publisher
from lineguard.runtime.line.readiness import Lifecycle, readiness_checks
from lineguard.runtime.line.sockets import bind_line_sockets, max_message_bytes, split_envelope
from lineguard.runtime.line.state import LineStateError
from lineguard.runtime.llm.explain_server import ExplanationServer
from lineguard.runtime.scoring.inspector import Inspector, UnknownProductError

__all__ = ["LineServer", "ServerError", "max_message_bytes", "split_envelope"]

log = logging.getLogger(__name__)

READ_BURST = 64  # messages read from one socket before the loop looks at the others


class LineServer:
    def __init__(self, inspector: Inspector, config: LineConfig, context: zmq.Context | None = None) -> None:
        self.inspector = inspector
        self.owns_inspector = False  # an inspector passed in stays its caller's to close
        self.config = config
        secured = config.security.curve is not None
        self._own_context = secured and context is None  # one ZAP handler per context: its own
        self.context = context or (zmq.Context() if secured else zmq.Context.instance())
        self.curve = assembly.curve_authority(config, self.context)
        self.bundle_id = inspector.bundle.manifest.bundle_id
        if inspector.false_reject_budget != config.false_reject_budget:  # the line config owns the budget
            log.info("false-reject budget %g from the line config (the inspector was made with %g)",
                     config.false_reject_budget, inspector.false_reject_budget)
            inspector.false_reject_budget = config.false_reject_budget
        self.served = set(config.products or inspector.products)
        self.boot_id = uuid.uuid4().hex[:12]
        try:  # the earlier boots: lifetime totals and the previous boot's record
            self.state = LineStateKeeper(config.state_file, config.line, self.boot_id)
        except LineStateError as exc:
            raise ServerError(f"line {config.line}: {exc}") from None
        self.admission = Admission(config, self.served, self.curve)
        self.archive = assembly.frame_archive(config.archive)
        self.judge = assembly.llm_judge(config, inspector)
        self.batcher = MicroBatcher(inspector, self._on_verdict, config.batching, bundle_id=self.bundle_id,
                                    archive=self.archive, judge=assembly.judge_policy(config, self.judge),
                                    cameras=config.cameras)
        self.endpoints = config.endpoints.model_copy()  # replaced by the bound addresses at start
        self.counters = LineCounters()
        self.life = Lifecycle(config.heartbeat_interval_ms)
        self._outbox: deque[tuple[Verdict, list[bytes] | None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self.explanations: ExplanationServer | None = None
        self.drift = DriftMonitor(inspector.false_reject_budget, config.drift)  # the budget verdicts are made with
        self.metrics = LineMetrics(self.heartbeat)

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike[str], config: LineConfig) -> LineServer:
        """Open the bundle (its signature checked when the line names a ``security.bundle_public_key``), run
        its models on the backend ``config.inference`` asks for, with the line's false-reject budget."""
        inspector, threads = assembly.line_inspector(bundle, config)
        backend = inspector.chain.backend
        log.info("line %s: inference backend %s", config.line, backend.summary())
        if backend.backend == "onnxruntime":
            log.info("line %s: onnxruntime %s", config.line, threads.summary())
        server = cls(inspector, config)
        server.owns_inspector = True  # made here: its backends are released when the server stops
        return server

    # -- what this boot counted (lineguard.runtime.line.counters) ----------------------------------------

    @property
    def seq(self) -> int:
        """The last published verdict's seq: verdicts published by this boot."""
        return self.counters.seq

    @property
    def frames_in(self) -> int:
        return self.counters.frames_in

    @property
    def dropped(self) -> int:
        return self.counters.dropped

    # -- lifecycle (lineguard.runtime.line.readiness) -----------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the models are warmed up and the sockets bound; False again while stopping."""
        return self.life.ready

    def readiness(self) -> dict[str, bool]:
        """What ``/readyz`` checks, each by name: ready only when every one is True."""
        return readiness_checks(self.life, self.batcher, self.config.batching.workers, self.judge, self.explanations)

    def loop_turning(self, within_s: float | None = None) -> bool:
        """The serving loop went round within ``within_s`` (default: three heartbeat intervals). It wakes at
        least once per heartbeat, so a loop stuck in a call (a hung socket, a deadlock) fails this."""
        return self.life.loop_turning(within_s)

    @property
    def loop_failed(self) -> bool:
        """The serving loop ended on an error (liveness: the process should be restarted)."""
        return self.life.loop_failed

    def start(self, timeout_s: float = 120.0) -> LineServer:
        """Serve on a background thread; returns once ready, raises ServerError if start-up failed."""
        if self._thread is not None:
            raise ServerError("this server has already been started")
        self._thread = threading.Thread(target=self._run_guarded, name=f"line-{self.config.line}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.life.started.wait(0.05):
            if self.life.finished.is_set() or time.monotonic() > deadline:
                self.stop()
                failure = self.life.failure
                if isinstance(failure, ServerError):
                    raise failure
                raise ServerError(f"line {self.config.line} did not start: {failure or 'timed out'}")
        return self

    def request_stop(self) -> None:
        """Ask the loop to stop (safe from signal handlers and other threads); returns at once."""
        self.life.stopping.set()
        self._wake()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake, drain in-flight frames (verdicts or TIMEOUT), close the sockets; wait for it."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.config.drain_timeout_ms / 1e3 + 5.0)
        failure = self.life.failure
        if failure is not None and not isinstance(failure, ServerError):
            log.error("line %s loop ended with %r", self.config.line, failure)

    def __enter__(self) -> LineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """Warm up, bind, serve until request_stop() (or Ctrl-C), drain, close. Blocks."""
        self.life.started_at = time.monotonic()
        try:
            self._warm_up()
            if self.curve is not None:
                self.curve.start()  # the ZAP handler answers before any socket is bound
            *sockets, self.endpoints = bind_line_sockets(self.context, self.config, self.curve)
            self.batcher.start()
            try:
                self.explanations = assembly.explanation_server(self.config, self.inspector, self.archive,
                                                                self.context, self.curve, self.metrics.observe_explanation)
                if self.explanations is not None:
                    self.endpoints = self.endpoints.model_copy(update={"explanations": self.explanations.endpoint})
                self.life.started.set()
                log.info("line %s ready: frames %s, inspect %s, verdicts %s", self.config.line,
                         self.endpoints.frames, self.endpoints.inspect, self.endpoints.verdicts)
                self._serve(*sockets)
            finally:
                self.life.started.clear()
                self.batcher.close(timeout_s=0.0)  # no-op after a clean drain
                if self.explanations is not None:
                    self.explanations.stop()
                if self.judge is not None:
                    self.judge.worker.close()
                for s in sockets:
                    s.close()
                if self.owns_inspector:
                    self.inspector.close()
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
            self.life.failure = exc
            log.exception("line %s stopped on an error", self.config.line)
        finally:
            self.life.finished.set()

    def _warm_up(self) -> None:
        """Load every served product and run it at batch 1 and at max_batch, so neither the first frame
        nor the first full batch pays for lazy set-up (allocations, an execution provider's engine build);
        the batcher times a few batch sizes too (the latency its deadline-aware batches are planned with)."""
        for camera_id, camera in sorted(self.config.cameras.items()):  # each of its frames would be refused
            if camera.product is not None and camera.product not in self.served:
                raise ServerError(f"line {self.config.line}: cameras.{camera_id}.product: {camera.product!r} is not "
                                  f"served (enrolled and served here: {sorted(self.served) or 'none'})")
        h, w = self.inspector.input_size
        for product in sorted(self.served) or [None]:
            try:
                self.batcher.warm_up(np.full((h, w, 3), 127, np.uint8), product)
            except UnknownProductError as exc:
                raise ServerError(f"line {self.config.line}: {exc}") from None

    # -- the loop -----------------------------------------------------------------------------------

    def _serve(self, frames: zmq.Socket, inspect: zmq.Socket, verdicts: zmq.Socket) -> None:
        self.publisher = Publisher(self.config.line, self.counters, verdicts, inspect,
                                   observers=[self.metrics.observe_verdict, self.drift.observe])
        poller = zmq.Poller()
        poller.register(frames, zmq.POLLIN)
        poller.register(inspect, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        interval = self.config.heartbeat_interval_ms / 1e3
        next_beat = time.monotonic()
        drain_until: float | None = None
        while True:
            try:
                self.life.tick()  # the watchdog's proof that this loop still turns
                wait_ms = max(0.0, (next_beat - time.monotonic()) * 1e3)
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
                if self.life.stopping.is_set():
                    if drain_until is None:
                        drain_until = now + self.config.drain_timeout_ms / 1e3
                        self.life.draining = True
                        self.batcher.stop_intake()
                        log.info("line %s draining %d frames", self.config.line,
                                 self.batcher.queued + self.batcher.in_flight)
                    if (self.batcher.idle and not self._outbox) or now >= drain_until:
                        break
            except KeyboardInterrupt:
                self.life.stopping.set()
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
            self.counters.frames_in += 1
            envelope: list[bytes] | None = None
            try:
                if routed:
                    envelope, parts = split_envelope(parts)
                self._accept(parts, envelope)
            except Exception as exc:  # a bug in handling one message must not stop the line
                log.exception("could not handle a message")
                self._deliver(refusal(FrameIds(), ErrorCode.INTERNAL, repr(exc), self.bundle_id), envelope)

    def _accept(self, parts: list[zmq.Frame], envelope: list[bytes] | None) -> None:
        """Queue the frame for inference (lineguard.runtime.line.admission), or answer why not."""
        received = time.monotonic()
        try:
            request = self.admission.request(parts, envelope, received, draining=self.life.draining)
            try:
                accepted = self.batcher.submit(request)
            except BatcherClosed:
                raise FrameError(ErrorCode.SHUTTING_DOWN, "the line is shutting down", request.ids) from None
            if not accepted:
                raise FrameError(ErrorCode.OVERLOADED,
                                 f"{self.config.batching.max_queue} frames already waiting for inference", request.ids)
        except FrameError as exc:
            self._deliver(refusal(exc.ids, exc.code, exc.message, self.bundle_id,
                                  (time.monotonic() - received) * 1e3), envelope)

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
        self.publisher.deliver(verdict, envelope)  # counted, numbered (seq), published and/or replied

    # -- heartbeat and state ------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        self.counters.heartbeat_seq += 1
        self._reload_calibration()
        self.publisher.heartbeat(self.heartbeat())
        self._save_state()

    def _save_state(self, clean_stop: bool = False) -> None:
        """Lifetime totals and this boot's record to ``state_file`` (loop thread); a failure is logged once."""
        self.state.save(self.counters.this_boot(self._archive_failures()), self.seq, clean_stop=clean_stop)

    def _archive_failures(self) -> int:
        return self.archive.failures if self.archive is not None else 0

    def _reload_calibration(self) -> None:
        """`lineguard enroll`/`calibrate` wrote the bundle: take the new calibration without a restart.
        A bundle caught half-written or tampered keeps serving what was loaded (and says so)."""
        try:
            for product in self.inspector.reload_products():
                # its old windows were judged against the calibration that was replaced; other products' stand
                self.drift.reset(product=product)
                log.info("product %s re-read from the bundle (re-enrolment or new calibration normals)", product)
        except Exception as exc:  # never let a bad write on disk stop the line
            log.warning("bundle changed on disk but could not be re-read, serving the loaded products: %s", exc)

    def heartbeat(self) -> Heartbeat:
        """The service's health now (what the next heartbeat message carries). Safe from any thread."""
        c = self.counters
        this_boot = c.this_boot(self._archive_failures())
        drift = self.drift.snapshot()
        return Heartbeat(
            drift=drift.windows, drift_alarms=drift.alarms,
            line=self.config.line, boot_id=self.boot_id, seq=c.heartbeat_seq, timestamp_ns=time.time_ns(),
            interval_ms=self.config.heartbeat_interval_ms, uptime_s=self.life.uptime_s,
            ready=self.ready, draining=self.life.draining, queue_depth=self.batcher.queued,
            in_flight=self.batcher.in_flight, frames_in=this_boot.frames_in, verdicts_out=this_boot.verdicts_out,
            replies_out=this_boot.replies_out, last_verdict_seq=this_boot.verdicts_out, dropped=this_boot.dropped,
            verdicts=this_boot.verdicts, errors=this_boot.errors, archive_failures=this_boot.archive_failures,
            worker_restarts=self.batcher.worker_restarts, auth_denied=self.curve.denied if self.curve else 0,
            camera_denied=c.camera_denied, lifetime=self.state.lifetime(this_boot),
            previous_boot=self.state.before.last_boot,
        )
