"""Supervision of the batcher's inference threads: started together, each replaced when it dies.

Usage::

    pool = WorkerPool(2, loop=work, name="batcher-worker")   # loop(): take batches until told to stop
    pool.start()
    pool.revive()             # the deadline watch calls this: a thread that ended is replaced and counted
    pool.alive, pool.restarts
    pool.join(deadline)       # at close: wait for the threads to drain (``time.monotonic`` deadline)

Owns the threads and the restart count only. What a worker does with a fault is the batcher's rule
(lineguard.runtime.line.batcher): an exception answers its batch and the worker goes on; a BaseException
(the worker is being torn down) answers its batch WORKER_FAILED and ends the thread, and the next
``revive()`` starts a replacement. Workers end on their own only at close, so ``revive()`` is a no-op then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int, loop: Callable[[], None], name: str = "batcher-worker") -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._loop = loop
        self._threads = [self._thread(f"{name}-{i}") for i in range(size)]
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self.restarts = 0  # workers that died and were replaced

    def _thread(self, name: str) -> threading.Thread:
        return threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._threads]

    @property
    def size(self) -> int:
        return len(self._threads)

    @property
    def alive(self) -> int:
        """Threads running now (all of them once started, unless one just died)."""
        return sum(t.is_alive() for t in self._threads)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for t in self._threads:
                t.start()

    def revive(self) -> int:
        """Replace every thread that has ended (it died: workers only end at close); how many were."""
        with self._lock:
            if self._stopping or not self._started:
                return 0
            replaced = 0
            for i, t in enumerate(self._threads):
                if not t.is_alive():
                    log.error("batcher worker %s died; starting a new one", t.name)
                    self._threads[i] = self._thread(t.name)
                    self._threads[i].start()
                    replaced += 1
            self.restarts += replaced
            return replaced

    def stop_reviving(self) -> None:
        """From now on threads end for good (close)."""
        with self._lock:
            self._stopping = True

    def join(self, deadline: float) -> None:
        """Wait for the threads to end, at most until ``deadline`` (``time.monotonic`` seconds)."""
        if not self._started:
            return
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
