"""What a ZeroMQ endpoint's address needs of the socket that binds or connects it.

    sock.setsockopt(zmq.IPV6, is_ipv6_endpoint(endpoint))   # before bind/connect

libzmq sockets are IPv4-only unless ZMQ_IPV6 is set, and with it set an IPv4 bind reports itself as
``[::ffff:127.0.0.1]`` and a host name may resolve to its IPv6 address first (``localhost`` to ::1, where a
line bound 127.0.0.1 never answers). So the option goes on only for an address written as IPv6.
"""

from __future__ import annotations


def is_ipv6_endpoint(endpoint: str) -> bool:
    """A ``tcp://`` endpoint whose (bound) host is a bracketed IPv6 address: ``tcp://[::1]:5555``."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint.removeprefix("tcp://").rpartition(":")[0].split(";")[-1]  # "source;destination"
    return host.startswith("[") and host.endswith("]")
