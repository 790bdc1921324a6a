"""What the model process says, typed, and the handle on which one job's events wait for whoever asked.

Usage::

    handle = worker.submit("job-1", messages, max_tokens=128)   # lineguard.runtime.llm.worker.LlmWorker
    for event in handle.drain():                                 # ready now: Chunk ..., then Final or JobError
        ...
    event = handle.next(timeout_s=0.1)                           # the next one, or None
    result = handle.result(timeout_s=2.0)                        # JobResult once the job ended, else None
    result.text, result.final, result.error
    handle.cancel()                                              # the job ends with a Final, "cancelled"

The worker's child process sends these events over its own multiprocessing queue (pickled between the
two processes of one worker, never over a network); one reader thread in the worker puts each job's
events on that job's handle, so several users of one worker never see (or lose) each other's events.
``Ready`` and ``Failed`` only answer the start of the process.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Ready:
    """The model is loaded; jobs are taken."""


@dataclass(frozen=True)
class Failed:
    """The model could not be loaded: the process ends."""

    message: str


@dataclass(frozen=True)
class Chunk:
    """Text of a job's answer (a whole sentence at a time for ``whole_sentences`` jobs)."""

    job_id: str
    text: str


@dataclass(frozen=True)
class Final:
    """A job ended: its token counts and timings. ``finish_reason``: stop, length, time or cancelled."""

    job_id: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    time_to_first_token_ms: float | None
    total_ms: float

    def stats(self) -> dict[str, Any]:
        """The counts and timings without the job id (the fields of a ``final`` ExplainReply)."""
        out = asdict(self)
        del out["job_id"]
        return out


@dataclass(frozen=True)
class JobError:
    """A job failed; ``process_died``: because the model process died or was closed (restart it)."""

    job_id: str
    message: str
    process_died: bool = False


JobEvent = Chunk | Final | JobError
WorkerEvent = Ready | Failed | JobEvent


@dataclass(frozen=True)
class JobResult:
    """A finished job: its whole text and how it ended (``final`` or ``error``, never both)."""

    job_id: str
    text: str
    final: Final | None = None
    error: JobError | None = None


class JobHandle:
    """One submitted job's events, in order, for whoever submitted it (thread-safe).

    ``next``/``drain`` hand out events one by one (streaming); ``result`` waits for the end. Either way the
    handle keeps the text seen so far (``text``) and the ending event (``end``).
    """

    def __init__(self, job_id: str, cancel: Callable[[str], None] | None = None) -> None:
        self.job_id = job_id
        self._cancel = cancel
        self._events: queue.SimpleQueue[JobEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._text: list[str] = []
        self.end: Final | JobError | None = None

    def put(self, event: JobEvent) -> None:
        """Deliver an event (the worker's reader thread; fakes in tests)."""
        self._events.put(event)

    def next(self, timeout_s: float = 0.0) -> JobEvent | None:
        """The next event, waiting up to ``timeout_s``; None when none came (or the job already ended)."""
        with self._lock:
            if self.end is not None:
                return None
            try:
                event = self._events.get(timeout=timeout_s) if timeout_s > 0 else self._events.get_nowait()
            except queue.Empty:
                return None
            if isinstance(event, Chunk):
                self._text.append(event.text)
            else:
                self.end = event
            return event

    def drain(self) -> list[JobEvent]:
        """The events that are ready now (the last one is the ending event if the job ended)."""
        out: list[JobEvent] = []
        while (event := self.next()) is not None:
            out.append(event)
        return out

    def result(self, timeout_s: float) -> JobResult | None:
        """The job's result once it ended, waiting up to ``timeout_s`` for it; None while it still runs."""
        end = self._wait_end(timeout_s)
        if end is None:
            return None
        if isinstance(end, Final):
            return JobResult(self.job_id, self.text, final=end)
        return JobResult(self.job_id, self.text, error=end)

    def _wait_end(self, timeout_s: float) -> Final | JobError | None:
        deadline = time.monotonic() + timeout_s
        while self.end is None:
            left = deadline - time.monotonic()
            if self.next(max(left, 0.0)) is None and left <= 0:
                break
        return self.end

    @property
    def text(self) -> str:
        """The answer's text seen so far."""
        return "".join(self._text)

    @property
    def done(self) -> bool:
        """The ending event (Final or JobError) has been taken from this handle."""
        return self.end is not None

    def cancel(self) -> None:
        """Ask the model to stop this job (at its next token, or before it starts)."""
        if self._cancel is not None and self.end is None:
            self._cancel(self.job_id)
