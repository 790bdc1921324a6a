"""Ask the explanation port about a frame and read the streamed answer (what ``lineguard explain`` does).

Usage::

    for reply in ask("tcp://localhost:5557", "cam0-3f2a1c-0000123", "Why was it rejected?"):
        print(reply.text, end="", flush=True)      # chunks; the last reply is "final" or "error"
"""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from lineguard.runtime.curve import CurveClientConfig
from lineguard.runtime.messages import ExplainReply, ExplainRequest


def ask(endpoint: str, frame_id: str, question: str | None = None, idle_timeout_s: float = 120.0,
        context: zmq.Context | None = None, curve: CurveClientConfig | None = None,
        follow_up: bool = False) -> Iterator[ExplainReply]:
    """Yield replies until the final (or error) one; TimeoutError when the service says nothing for a while.
    ``curve``: key pair + server key for a line with CURVE on (without an allowed key nothing ever answers);
    ``follow_up``: continue the frame's conversation (its earlier questions and answers go with this one)."""
    sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.secure(sock)
    sock.connect(endpoint)
    try:
        sock.send(ExplainRequest(frame_id=frame_id, question=question, follow_up=follow_up).model_dump_json().encode())
        while True:
            if not sock.poll(int(idle_timeout_s * 1e3)):
                hint = "" if curve is not None else (" (a line with CURVE answers only keys granted its explanation "
                                                     "port: pass curve=, or --curve-client-key/--curve-server-key)")
                raise TimeoutError(f"no answer from {endpoint} for {idle_timeout_s:.0f} s{hint}")
            reply = ExplainReply.model_validate_json(sock.recv())
            yield reply
            if reply.type != "chunk":
                return
    finally:
        sock.close()
