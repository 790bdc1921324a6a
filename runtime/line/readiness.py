"""Where the line service is in its life, and what ``/readyz`` and ``/healthz`` read of it.

Usage::

    life = Lifecycle(heartbeat_interval_ms=1000)
    life.started.set()                 # sockets bound, models warm   (life.ready: True)
    life.tick()                        # the serving loop, every turn (life.loop_turning(): True)
    life.stopping.set()                # request_stop()               (life.ready: False)
    readiness_checks(life, batcher, workers=2, judge=judge, explanations=explanations)   # {"bundle_loaded": True, ...}

Owns the service's lifecycle flags (started, stopping, draining, finished, the failure that ended the loop)
and the readiness checks by name: the service is ready only when each one is.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class _Workers(Protocol):
    @property
    def workers_alive(self) -> int: ...


class _Alive(Protocol):
    @property
    def alive(self) -> bool: ...


class _HasWorker(Protocol):
    """An LLM part (the judge, the explanation server): ready while its model process lives."""

    @property
    def worker(self) -> _Alive: ...


class _Port(_HasWorker, Protocol):
    """The explanation server: ready while its model process and its own thread live."""

    @property
    def serving(self) -> bool: ...


class Lifecycle:
    def __init__(self, heartbeat_interval_ms: float) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.started = threading.Event()  # models warmed up, sockets bound
        self.stopping = threading.Event()  # request_stop() was called
        self.finished = threading.Event()  # the serving loop's thread ended
        self.failure: BaseException | None = None  # what ended it, if not a stop
        self.draining = False  # intake stopped, in-flight frames finishing
        self.started_at = time.monotonic()
        self._tick = time.monotonic()

    @property
    def ready(self) -> bool:
        """True once the models are warmed up and the sockets bound; False again while stopping."""
        return self.started.is_set() and not self.stopping.is_set()

    def tick(self) -> None:
        """The serving loop went round (it does at least once per heartbeat)."""
        self._tick = time.monotonic()

    def loop_turning(self, within_s: float | None = None) -> bool:
        """The serving loop went round within ``within_s`` (default: three heartbeat intervals): a loop stuck in
        a call (a hung socket, a deadlock) fails this."""
        limit = within_s if within_s is not None else 3 * self.heartbeat_interval_ms / 1e3
        return time.monotonic() - self._tick <= limit

    @property
    def loop_failed(self) -> bool:
        """The serving loop ended on an error (liveness: the process should be restarted)."""
        return self.finished.is_set() and self.failure is not None

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at


def readiness_checks(life: Lifecycle, batcher: _Workers, workers: int, judge: _HasWorker | None = None,
                     explanations: _Port | None = None) -> dict[str, bool]:
    """What ``/readyz`` checks, each by name: ready only when every one is True."""
    checks = {
        "bundle_loaded": True,  # the service exists only once the inspector has opened the bundle
        "sockets_bound": life.started.is_set(),
        "accepting_frames": life.ready and not life.draining,
        "inference_workers": batcher.workers_alive == workers,
    }
    if judge is not None:
        checks["llm_judge"] = judge.worker.alive
    if explanations is not None:
        checks["explanations"] = explanations.worker.alive and explanations.serving
    return checks
