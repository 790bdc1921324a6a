"""The explanation port: technicians ask why a frame was judged as it was; answers stream back.

Usage::

    worker = LlmWorker(bundle.path("llm.gguf")).start()
    server = ExplanationServer("tcp://*:5557", archive, worker).start()
    ...
    server.stop()

Protocol (ROUTER; clients are DEALER sockets, which can receive several replies): the client sends
one frame, an ``ExplainRequest`` JSON; the server answers ``ExplainReply`` JSON frames: ``chunk``
messages as tokens arrive, then one ``final`` with token counts and timings, or one ``error``
(``BAD_REQUEST``, ``UNKNOWN_FRAME`` for a frame not in the archive, ``BUSY`` when ``max_pending``
requests are already queued, ``LLM_FAILED`` when the model process died; it is restarted).
The model runs in its own process: this thread only moves messages.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections import Counter

import zmq
from pydantic import ValidationError

from lineguard.runtime.archive import FrameArchive
from lineguard.runtime.explain_prompt import explanation_messages
from lineguard.runtime.llm_worker import LlmWorker, LlmWorkerError
from lineguard.runtime.messages import ErrorInfo, ExplainReply, ExplainRequest

log = logging.getLogger(__name__)


class ExplanationServer:
    def __init__(self, endpoint: str, archive: FrameArchive, worker: LlmWorker, max_pending: int = 4,
                 max_tokens: int = 160, context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.archive = archive
        self.worker = worker
        self.max_pending = max_pending
        self.max_tokens = max_tokens
        self.context = context or zmq.Context.instance()
        self.counts: Counter[str] = Counter()
        self._jobs: dict[str, tuple[bytes, str]] = {}  # job id -> (client identity, frame id)
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> ExplanationServer:
        self._thread = threading.Thread(target=self.run, name="explanations", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout_s):
            raise RuntimeError(f"explanation port {self.endpoint} did not bind")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.worker.close()

    def run(self) -> None:
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, 64)
        router.setsockopt(zmq.SNDHWM, 10_000)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished client raises instead of silently dropping
        router.bind(self.endpoint)
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if router.poll(20):
                    self._on_request(router, router.recv_multipart())
                self._forward(router)
        finally:
            router.close()

    def _reply(self, router: zmq.Socket, identity: bytes, reply: ExplainReply) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the client left: nothing to deliver to
            router.send_multipart([identity, reply.model_dump_json().encode()])

    def _error(self, router: zmq.Socket, identity: bytes, frame_id: str, code: str, message: str) -> None:
        self.counts[code] += 1
        self._reply(router, identity, ExplainReply(type="error", frame_id=frame_id,
                                                   error=ErrorInfo(code=code, message=message)))

    def _on_request(self, router: zmq.Socket, parts: list[bytes]) -> None:
        identity, body = parts[0], parts[-1]
        try:
            request = ExplainRequest.model_validate_json(body)
        except ValidationError as exc:
            self._error(router, identity, "", "BAD_REQUEST", f"not an ExplainRequest: {exc.errors()[0]['msg']}")
            return
        if not self._jobs and not self.worker.alive:  # died while idle: bring it back before using it
            try:
                self.worker.restart()
            except LlmWorkerError as exc:
                self._error(router, identity, request.frame_id, "LLM_FAILED", str(exc))
                return
        if len(self._jobs) >= self.max_pending:
            self._error(router, identity, request.frame_id, "BUSY",
                        f"{len(self._jobs)} explanations already queued; try again shortly")
            return
        frame = self.archive.find(request.frame_id)
        if frame is None:
            self._error(router, identity, request.frame_id, "UNKNOWN_FRAME",
                        f"frame {request.frame_id!r} is not in the archive (only NG and sampled OK frames are kept)")
            return
        job = uuid.uuid4().hex
        self._jobs[job] = (identity, request.frame_id)
        self.counts["requests"] += 1
        self.worker.submit(job, explanation_messages(frame.verdict, request.question), self.max_tokens)

    def _forward(self, router: zmq.Socket) -> None:
        for kind, job, detail in self.worker.events():
            if job not in self._jobs:
                continue
            identity, frame_id = self._jobs[job]
            if kind == "chunk":
                self._reply(router, identity, ExplainReply(type="chunk", frame_id=frame_id, text=detail))
            elif kind == "final":
                del self._jobs[job]
                self._reply(router, identity, ExplainReply(type="final", frame_id=frame_id, **detail))
            else:
                del self._jobs[job]
                self._error(router, identity, frame_id, "LLM_FAILED", str(detail))
        if self._jobs and not self.worker.alive:
            log.error("the LLM process died with %d explanations in flight; restarting it", len(self._jobs))
            for identity, frame_id in self._jobs.values():
                self._error(router, identity, frame_id, "LLM_FAILED", "the LLM process died; ask again")
            self._jobs.clear()
            try:
                self.worker.restart()
            except LlmWorkerError as exc:
                log.error("LLM restart failed: %s", exc)
