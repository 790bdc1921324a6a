"""What a ZeroMQ endpoint's address needs of the socket that binds or connects it.

    sock.setsockopt(zmq.IPV6, is_ipv6_endpoint(endpoint))   # before bind/connect

libzmq sockets are IPv4-only unless ZMQ_IPV6 is set, and with it set an IPv4 bind reports itself as
``[::ffff:127.0.0.1]`` and a host name may resolve to its IPv6 address first (``localhost`` to ::1, where a
line bound 127.0.0.1 never answers). So the option goes on only for an address written as IPv6.
"""

from __future__ import annotations


def tcp_address(endpoint: str) -> tuple[str, str] | None:
    """(host, port) of a ``tcp://`` endpoint, None for ipc:// and inproc://. The host is the bound part of a
    "source;destination" connect; the port is "" where none is written (``tcp://host``)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, sep, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not sep:
        host, port = endpoint.removeprefix("tcp://"), ""
    return host.split(";")[-1], port


def is_ipv6_endpoint(endpoint: str) -> bool:
    """A ``tcp://`` endpoint whose (bound) host is a bracketed IPv6 address: ``tcp://[::1]:5555``."""
    address = tcp_address(endpoint)
    return address is not None and address[0].startswith("[") and address[0].endswith("]")
