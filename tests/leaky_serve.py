"""``lineguard`` with a line service that leaks on purpose: ``python tests/leaky_serve.py serve BUNDLE --config LINE.yaml``.

``tests/test_soak.py::test_an_injected_leak_crosses_the_bound`` soaks it to prove the leak bounds can fail. It runs
apart from pytest so that the RSS and open files the soak samples are this service's alone: inside a pytest process
that had run the whole suite, the allocator handing back freed heap once showed RSS falling 800 MB/min while the
leak ran. Everything but the leak is ``lineguard serve`` itself (the real CLI, its start-up and SIGTERM drain).

Per message read it keeps ``LEAK_BYTES`` of fresh, touched pages and every ``LEAK_FD_EVERY`` messages an open file.
"""

from __future__ import annotations

import mmap
import os
import sys

from lineguard.cli import main
from lineguard.runtime.line.server import LineServer

LEAK_BYTES = 64 * 1024  # per message read: what keeping a JPEG or a small anomaly map per frame costs
LEAK_FD_EVERY = 8  # and one open file per this many messages

kept: list[object] = []
accept = LineServer._accept


def leaky_accept(self, parts, envelope):  # type: ignore[no-untyped-def]
    block = mmap.mmap(-1, LEAK_BYTES)  # pages from the OS, each one written so that it counts in RSS
    block.write(os.urandom(LEAK_BYTES))
    kept.append(block)
    if len(kept) % LEAK_FD_EVERY == 0:
        kept.append(open(os.devnull, "rb"))  # noqa: SIM115 (the leak is the point)
    return accept(self, parts, envelope)


if __name__ == "__main__":
    LineServer._accept = leaky_accept  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
