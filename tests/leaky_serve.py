"""A line service that leaks on purpose, in a process of its own: ``python tests/leaky_serve.py BUNDLE LINE.yaml``.

``tests/test_soak.py::test_an_injected_leak_crosses_the_bound`` soaks it to prove the leak bounds can fail. It runs
apart from pytest so that the RSS and open files the soak samples are this service's alone: inside a pytest process
that had run the whole suite, the allocator handing back freed heap once showed RSS falling 800 MB/min while the
leak ran.

Per message read it keeps ``LEAK_BYTES`` of fresh, touched pages and every ``LEAK_FD_EVERY`` messages an open file.
SIGTERM or SIGINT drains and stops it, as ``lineguard serve``.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys

from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer

LEAK_BYTES = 64 * 1024  # per message read: what keeping a JPEG or a small anomaly map per frame costs
LEAK_FD_EVERY = 8  # and one open file per this many messages


def leak_per_message(server: LineServer, kept: list[object]) -> None:
    accept = server._accept

    def leaky_accept(parts, envelope):  # type: ignore[no-untyped-def]
        block = mmap.mmap(-1, LEAK_BYTES)  # pages from the OS, each one written so that it counts in RSS
        block.write(os.urandom(LEAK_BYTES))
        kept.append(block)
        if len(kept) % LEAK_FD_EVERY == 0:
            kept.append(open(os.devnull, "rb"))  # noqa: SIM115 (the leak is the point)
        return accept(parts, envelope)

    server._accept = leaky_accept  # type: ignore[method-assign]


def main(bundle: str, config_path: str) -> int:
    server = LineServer.from_bundle(bundle, LineConfig.from_yaml(config_path))
    kept: list[object] = []
    leak_per_message(server, kept)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
