"""The explanation port: technicians ask why a frame was judged as it was; answers stream back.

Usage::

    worker = LlmWorker(bundle.path("llm.gguf")).start()
    server = ExplanationServer("tcp://*:5557", archive, worker).start()
    ...
    server.stop()

Protocol (ROUTER; clients are DEALER sockets, which can receive several replies): the client sends
one frame, an ``ExplainRequest`` JSON; the server answers ``ExplainReply`` JSON frames: ``chunk``
messages as tokens arrive, then one ``final`` with token counts and timings, or one ``error``
(``BAD_REQUEST``, ``OVERSIZE`` for a question beyond ``max_question_chars``, ``UNKNOWN_FRAME`` for a
frame not in the archive, ``BUSY`` when ``max_pending`` requests are already queued, ``LLM_FAILED`` when
the model process died; it is restarted). Frame ids are only compared with archived verdicts, never used
as paths.
A request with ``cancel: true`` stops that client's answer about the frame (a ``final`` with
``finish_reason: "cancelled"`` follows); a client that disconnects mid-answer has its answer stopped too,
so an abandoned question never holds the model.
A request with ``follow_up: true`` continues the frame's conversation: its earlier questions and answers
(at most ``MAX_TURNS``, the findings always in the first) go to the model with the new question; without
it a new conversation starts. Conversations are kept for the ``MAX_CONVERSATIONS`` frames asked about
last and forgotten with their frame when the archive evicts it.
The model runs in its own process: this thread only moves messages, each answer's from the handle its
request was submitted with (lineguard.runtime.llm.events.JobHandle), so a model shared with other users
never hands this port their events.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

import numpy as np
import zmq
from pydantic import ValidationError

from lineguard.runtime.contract import ErrorCode, ErrorInfo, ExplainReply, ExplainRequest, Verdict
from lineguard.runtime.contract.addresses import is_ipv6_endpoint
from lineguard.runtime.llm.events import Chunk, Final, JobHandle
from lineguard.runtime.llm.grounding import Grounder
from lineguard.runtime.llm.prompts import DEFAULT_QUESTION, explanation_messages
from lineguard.runtime.llm.worker import LlmWorker, LlmWorkerError

log = logging.getLogger(__name__)


class _Archived(Protocol):
    verdict: Verdict
    image_rgb: np.ndarray
    anomaly_map: np.ndarray


class ArchivedVerdicts(Protocol):
    """Where the server looks frames up: the line's NG archive (lineguard.runtime.line.archive.FrameArchive)."""

    def find(self, frame_id: str) -> _Archived | None: ...
MAX_TURNS = 4  # earlier (question, answer) turns a follow-up carries; the context holds the findings and these
MAX_CONVERSATIONS = 64  # frames whose conversation is kept


class ExplanationPortError(RuntimeError):
    """The explanation port could not be opened (its address is taken or invalid)."""


class ExplanationServer:
    def __init__(self, endpoint: str, archive: ArchivedVerdicts, worker: LlmWorker, max_pending: int = 4,
                 max_tokens: int = 160, context: zmq.Context | None = None,
                 on_reply: Callable[[ExplainReply], None] | None = None, max_question_chars: int = 500,
                 max_request_bytes: int = 65536, secure: Callable[[zmq.Socket, str], object] | None = None,
                 grounder: Grounder | None = None) -> None:
        """``max_question_chars``: longer questions are answered OVERSIZE; ``max_request_bytes``: ZeroMQ drops
        larger messages (MAXMSGSIZE); ``secure(socket, name)``: CURVE set-up before bind (CurveAuthority.secure);
        ``grounder``: text evidence (default), or the frame's soft prompt from its archived map and image."""
        self.grounder = grounder or Grounder()
        self.endpoint = endpoint
        self.max_question_chars = max_question_chars
        self.max_request_bytes = max_request_bytes
        self.secure = secure
        self.archive = archive
        self.worker = worker
        self.max_pending = max_pending
        self.max_tokens = max_tokens
        self.context = context or zmq.Context.instance()
        self.on_reply = on_reply  # e.g. LineMetrics.observe_explanation
        self.counts: Counter[str] = Counter()
        self._jobs: dict[str, tuple[bytes, str, JobHandle]] = {}  # job id -> (client identity, frame id, its events)
        self._asked: dict[str, tuple[str, list[str]]] = {}  # job id -> (question, answer so far)
        self.conversations: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()  # frame id -> turns
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self.bind_error: str | None = None

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered in full (at most ``max_pending``)."""
        return len(self._jobs)

    @property
    def serving(self) -> bool:
        """The port's thread runs (readiness: it ends only on stop() or a failure of the port itself)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> ExplanationServer:
        self._thread = threading.Thread(target=self.run, name="explanations", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout_s):
            raise ExplanationPortError(f"explanation port {self.endpoint} did not bind within {timeout_s:g} s")
        if self.bind_error is not None:
            self.worker.close()
            raise ExplanationPortError(self.bind_error)
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
        router.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes)
        if self.secure is not None:
            self.secure(router, "explanations")
        router.setsockopt(zmq.IPV6, is_ipv6_endpoint(self.endpoint))
        try:
            router.bind(self.endpoint)
        except zmq.ZMQError as exc:  # start() reports it, as the line reports its other ports
            self.bind_error = f"cannot bind explanations to {self.endpoint}: {exc.strerror}"
            router.close()
            self._bound.set()
            return
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if router.poll(20):
                    parts = router.recv_multipart()
                    try:
                        self._on_request(router, parts)
                    except Exception:  # one request that breaks (a bug, a disk error) is answered, the port
                        log.exception("explanation request failed")  # goes on serving the others
                        self._error(router, parts[0], "", ErrorCode.INTERNAL,
                                    "the request failed on the runtime (its log says why)")
                self._forward(router)
        finally:
            router.close()

    def _reply(self, router: zmq.Socket, identity: bytes, reply: ExplainReply) -> bool:
        """Send one reply; False when the client has gone (ROUTER_MANDATORY: EHOSTUNREACH)."""
        if self.on_reply is not None:
            self.on_reply(reply)
        try:
            router.send_multipart([identity, reply.model_dump_json().encode()])
        except zmq.ZMQError:
            return False
        return True

    def _error(self, router: zmq.Socket, identity: bytes, frame_id: str, code: ErrorCode, message: str) -> None:
        self.counts[code] += 1
        self._reply(router, identity, ExplainReply(type="error", frame_id=frame_id,
                                                   error=ErrorInfo(code=code, message=message)))

    def _on_request(self, router: zmq.Socket, parts: list[bytes]) -> None:
        identity, body = parts[0], parts[-1]
        try:
            request = ExplainRequest.model_validate_json(body)
        except ValidationError as exc:
            if all(e["loc"] == ("question",) and e["type"] == "string_too_long" for e in exc.errors()):
                self._error(router, identity, "", ErrorCode.OVERSIZE, f"the question is longer than {self.max_question_chars} characters")
            else:
                self._error(router, identity, "", ErrorCode.BAD_REQUEST, f"not an ExplainRequest: {exc.errors()[0]['msg']}")
            return
        if request.question is not None and len(request.question) > self.max_question_chars:
            self._error(router, identity, request.frame_id, ErrorCode.OVERSIZE,
                        f"the question has {len(request.question)} characters; this line allows {self.max_question_chars}")
            return
        if request.cancel:
            for owner, frame_id, handle in self._jobs.values():
                if owner == identity and frame_id == request.frame_id:
                    handle.cancel()
                    self.counts["cancelled"] += 1
            return
        if not self._jobs and not self.worker.alive:  # died while idle: bring it back before using it
            try:
                self.worker.restart()
            except LlmWorkerError as exc:
                self._error(router, identity, request.frame_id, ErrorCode.LLM_FAILED, str(exc))
                return
        if len(self._jobs) >= self.max_pending:
            self._error(router, identity, request.frame_id, ErrorCode.BUSY,
                        f"{len(self._jobs)} explanations already queued; try again shortly")
            return
        frame = self.archive.find(request.frame_id)
        if frame is None:
            self.conversations.pop(request.frame_id, None)  # evicted with its frame
            self._error(router, identity, request.frame_id, ErrorCode.UNKNOWN_FRAME,
                        f"frame {request.frame_id!r} is not in the archive (only NG and sampled OK frames are kept)")
            return
        job = uuid.uuid4().hex
        self.counts["requests"] += 1
        if not request.follow_up:
            self.conversations.pop(request.frame_id, None)
        history = self.conversations.get(request.frame_id, [])
        question = request.question or DEFAULT_QUESTION
        self._asked[job] = (question, [])
        try:
            vectors = self.grounder.vectors(frame.anomaly_map, frame.image_rgb)  # None for text grounding
        except Exception as exc:  # a broken prompt learner answers this request, it does not stop the port
            log.exception("soft prompt of frame %s failed", request.frame_id)
            self._asked.pop(job, None)
            self._error(router, identity, request.frame_id, ErrorCode.LLM_FAILED, f"soft prompt failed: {exc}")
            return
        try:
            handle = self.worker.submit(job, explanation_messages(frame.verdict, question, history, self.grounder.mode),
                                        self.max_tokens, whole_sentences=True, soft_prompt=vectors)
        except Exception:
            self._asked.pop(job, None)  # never answered: nothing to remember
            raise
        self._jobs[job] = (identity, request.frame_id, handle)

    def _remember(self, job: str, frame_id: str, finish_reason: str | None) -> None:
        """Keep a finished answer as a turn of its frame's conversation (bounded; least recent frame evicted)."""
        question, chunks = self._asked.pop(job, ("", []))
        if finish_reason == "cancelled" or not chunks:
            return
        turns = self.conversations.pop(frame_id, [])
        turns.append((question, "".join(chunks)))
        self.conversations[frame_id] = turns[-MAX_TURNS:]
        while len(self.conversations) > MAX_CONVERSATIONS:
            self.conversations.popitem(last=False)

    def _forward(self, router: zmq.Socket) -> None:
        """Each job's events, from its own handle, to the client that asked; a dead model is restarted."""
        lost = False
        for job, (identity, frame_id, handle) in list(self._jobs.items()):
            for event in handle.drain():
                if isinstance(event, Chunk):
                    if job in self._asked:
                        self._asked[job][1].append(event.text)
                    if not self._reply(router, identity, ExplainReply(type="chunk", frame_id=frame_id, text=event.text)):
                        del self._jobs[job]  # nobody is listening: free the model for the next question
                        self._asked.pop(job, None)
                        handle.cancel()
                        self.counts["abandoned"] += 1
                        break
                elif isinstance(event, Final):
                    del self._jobs[job]
                    self._remember(job, frame_id, event.finish_reason)
                    self._reply(router, identity, ExplainReply(type="final", frame_id=frame_id, **event.stats()))
                elif event.process_died:  # answered below, with every other answer still in flight
                    lost = True
                    break
                else:
                    del self._jobs[job]
                    self._asked.pop(job, None)
                    self._error(router, identity, frame_id, ErrorCode.LLM_FAILED, event.message)
        if lost or (self._jobs and not self.worker.alive):
            log.error("the LLM process died with %d explanations in flight; restarting it", len(self._jobs))
            for identity, frame_id, _ in self._jobs.values():
                self._error(router, identity, frame_id, ErrorCode.LLM_FAILED, "the LLM process died; ask again")
            self._jobs.clear()
            self._asked.clear()
            try:
                self.worker.restart()
            except LlmWorkerError as exc:
                log.error("LLM restart failed: %s", exc)
