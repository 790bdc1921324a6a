"""The line service's three ZeroMQ sockets: options, limits, binding, and the ROUTER envelope.

Usage::

    frames, inspect, verdicts, endpoints = bind_line_sockets(context, config, curve)   # ServerError if a bind fails
    envelope, body = split_envelope(parts)             # an inspect (ROUTER) message

Owns how each socket is made (DESIGN.md section 4): explicit HWM and LINGER; ``MAXMSGSIZE`` on the
receiving ones (frames and inspect: :func:`max_message_bytes`; PUB reads only subscriptions); with CURVE,
each secured as its endpoint's server before it binds. The sockets belong to the serving loop's thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq

from lineguard.runtime.contract.addresses import is_ipv6_endpoint
from lineguard.runtime.line.assembly import ServerError
from lineguard.runtime.line.config import Endpoints, LineConfig
from lineguard.runtime.security.curve_auth import CurveAuthority

MAX_SUBSCRIPTION_BYTES = 4096  # PUB reads subscriptions only; a topic is ~200 bytes at most


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


def line_socket(context: zmq.Context, config: LineConfig, kind: int, rcvhwm: int | None = None,
                sndhwm: int | None = None, max_message: int | None = None) -> zmq.Socket:
    s = context.socket(kind)
    s.setsockopt(zmq.LINGER, config.linger_ms)
    if max_message is not None:  # libzmq drops a peer announcing a larger message part, before buffering it
        s.setsockopt(zmq.MAXMSGSIZE, max_message)
    if rcvhwm is not None:
        s.setsockopt(zmq.RCVHWM, rcvhwm)
    if sndhwm is not None:
        s.setsockopt(zmq.SNDHWM, sndhwm)
    return s


def bind_line_sockets(context: zmq.Context, config: LineConfig, curve: CurveAuthority | None
                      ) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket, Endpoints]:
    """frames (PULL), inspect (ROUTER) and verdicts (PUB), bound; and the addresses they are bound to."""
    hwm = config.hwm
    largest = max_message_bytes(config)
    frames = line_socket(context, config, zmq.PULL, rcvhwm=hwm.frames_rcv, max_message=largest)
    inspect = line_socket(context, config, zmq.ROUTER, rcvhwm=hwm.inspect_rcv, sndhwm=hwm.inspect_snd,
                          max_message=largest)
    verdicts = line_socket(context, config, zmq.PUB, sndhwm=hwm.verdicts_snd, max_message=MAX_SUBSCRIPTION_BYTES)
    bound = {}
    try:
        for name, sock in (("frames", frames), ("inspect", inspect), ("verdicts", verdicts)):
            endpoint = getattr(config.endpoints, name)
            if curve is not None:
                curve.secure(sock, name)
            sock.setsockopt(zmq.IPV6, is_ipv6_endpoint(endpoint))
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ServerError(f"line {config.line}: cannot bind {name} to {endpoint}: {exc}") from None
            bound[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    except BaseException:
        for s in (frames, inspect, verdicts):
            s.close(linger=0)
        raise
    return frames, inspect, verdicts, config.endpoints.model_copy(update=bound)
