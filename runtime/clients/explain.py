"""The one client of the explanation port: ask about a frame, read the streamed answer, cancel it.

Usage::

    for reply in ask("tcp://localhost:5557", "cam0-3f2a1c-0000123", "Why was it rejected?"):
        print(reply.text, end="", flush=True)      # chunks; the last reply is "final" or "error"

    with ExplainClient("tcp://localhost:5557", "cam0-3f2a1c-0000123", "Why?", curve=keys) as question:
        for reply in question:                     # or ``async for`` on an event loop (the panel's relay)
            ...                                    # question.cancel(): the answer ends "cancelled"
    more = question.follow_up("Where exactly?")    # the frame's conversation goes on

``lineguard explain`` (through :func:`ask`) and the panel's "Why?" relay both use :class:`ExplainClient`.
Each question has a DEALER socket of its own (the port is a ROUTER), so every reply on it belongs to that
question: ``chunk`` replies, then one ``final`` or one ``error``. When the runtime says nothing for
``idle_timeout_s`` the stream ends with an ``error`` reply of code ``TIMEOUT`` (``timed_out`` is set;
:func:`ask` raises ``TimeoutError`` instead). Closing a question whose answer is still streaming (leaving
the ``with`` block, a page that went away) sends a cancel, so an abandoned question never holds the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType

import zmq
import zmq.asyncio

from lineguard.runtime.contract import ErrorCode, ErrorInfo, ExplainReply, ExplainRequest
from lineguard.runtime.contract.addresses import is_ipv6_endpoint
from lineguard.runtime.security.curve import CurveClientConfig

CANCEL_LINGER_MS = 500  # once a cancel is sent: long enough for it to leave after the socket closes


class ExplainClient:
    """One question about one frame on the explanation port, iterated (sync or async) for its replies."""

    def __init__(self, endpoint: str, frame_id: str, question: str | None = None, *, follow_up: bool = False,
                 idle_timeout_s: float = 120.0, curve: CurveClientConfig | None = None,
                 context: zmq.Context | None = None) -> None:
        """``follow_up``: continue the frame's conversation (its earlier questions and answers go with this
        one); ``curve``: key pair + server key for a line with CURVE on (without an allowed key nothing ever
        answers); ``context``: a plain or an asyncio ``zmq.Context`` (default: the process's instance)."""
        self.endpoint = endpoint
        self.request = ExplainRequest(frame_id=frame_id, question=question, follow_up=follow_up)
        self.idle_timeout_s = idle_timeout_s
        self.curve = curve
        self.context = context
        self.finished = False  # the final or error reply came (or the idle timeout ended the stream)
        self.timed_out = False  # ended by the idle timeout: the last reply is a TIMEOUT error made here
        self.cancelled = False  # a cancel went to the runtime
        self._sock: zmq.Socket | None = None

    @property
    def frame_id(self) -> str:
        return self.request.frame_id

    def follow_up(self, question: str | None) -> ExplainClient:
        """The next question of this frame's conversation, to the same port with the same keys and timeout."""
        return ExplainClient(self.endpoint, self.frame_id, question, follow_up=True,
                             idle_timeout_s=self.idle_timeout_s, curve=self.curve, context=self.context)

    # -- the stream -------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ExplainReply]:
        return self

    def __next__(self) -> ExplainReply:
        if self.finished:
            raise StopIteration
        sock = self._sock
        if sock is None:
            sock = self._open(zmq.Socket)
            sock.send(self._body(self.request))
        if not sock.poll(self._timeout_ms):
            return self._timeout()
        return self._receive(sock.recv())

    def __aiter__(self) -> ExplainClient:
        return self

    async def __anext__(self) -> ExplainReply:
        if self.finished:
            raise StopAsyncIteration
        sock = self._sock
        if sock is None:
            sock = self._open(zmq.asyncio.Socket)
            await sock.send(self._body(self.request))
        if not await sock.poll(self._timeout_ms):
            return self._timeout()
        return self._receive(await sock.recv())

    def cancel(self) -> None:
        """Stop the answer: the runtime ends it with a ``final`` whose finish_reason is "cancelled" (keep
        iterating to read it, or close). Nothing to do before the question was sent or after its answer."""
        if self._sock is None or self._sock.closed or self.finished or self.cancelled:
            return
        self._sock.setsockopt(zmq.LINGER, CANCEL_LINGER_MS)
        body = self._body(ExplainRequest(frame_id=self.frame_id, cancel=True))
        with contextlib.suppress(zmq.ZMQError):
            sent = self._sock.send(body, zmq.NOBLOCK)
            if asyncio.isfuture(sent) and sent.done() and not sent.cancelled():
                sent.exception()  # an asyncio socket reports a full queue on the future: nothing more to do
        self.cancelled = True

    def close(self) -> None:
        """Cancel an answer still streaming, then close the socket. Idempotent."""
        if self._sock is None or self._sock.closed:
            return
        self.cancel()
        self._sock.close()

    def __enter__(self) -> ExplainClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> ExplainClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------------

    @property
    def _timeout_ms(self) -> int:
        return max(int(self.idle_timeout_s * 1e3), 0)

    def _open(self, kind: type[zmq.Socket]) -> zmq.Socket:
        sock = kind(self.context or zmq.Context.instance(), zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.secure(sock)
        sock.setsockopt(zmq.IPV6, is_ipv6_endpoint(self.endpoint))
        sock.connect(self.endpoint)
        self._sock = sock
        return sock

    @staticmethod
    def _body(request: ExplainRequest) -> bytes:
        return request.model_dump_json().encode()

    def _receive(self, body: bytes) -> ExplainReply:
        reply = ExplainReply.model_validate_json(body)
        if reply.type != "chunk":
            self._end()
        return reply

    def _timeout(self) -> ExplainReply:
        self.timed_out = True
        self._end()
        return ExplainReply(type="error", frame_id=self.frame_id, error=ErrorInfo(
            code=ErrorCode.TIMEOUT, message=f"the line's LLM said nothing for {self.idle_timeout_s:.0f} s"))

    def _end(self) -> None:
        self.finished = True
        self.close()  # the answer is over: nothing to cancel


def ask(endpoint: str, frame_id: str, question: str | None = None, idle_timeout_s: float = 120.0,
        context: zmq.Context | None = None, curve: CurveClientConfig | None = None,
        follow_up: bool = False) -> Iterator[ExplainReply]:
    """Yield replies until the final (or error) one; TimeoutError when the service says nothing for a while.
    ``curve``: key pair + server key for a line with CURVE on (without an allowed key nothing ever answers);
    ``follow_up``: continue the frame's conversation (its earlier questions and answers go with this one).
    Closing the iterator before the answer is complete cancels it on the runtime."""
    with ExplainClient(endpoint, frame_id, question, follow_up=follow_up, idle_timeout_s=idle_timeout_s,
                       curve=curve, context=context) as client:
        for reply in client:
            if client.timed_out:
                hint = "" if curve is not None else (" (a line with CURVE answers only keys granted its explanation "
                                                     "port: pass curve=, or --curve-client-key/--curve-server-key)")
                raise TimeoutError(f"no answer from {endpoint} for {idle_timeout_s:.0f} s{hint}")
            yield reply
