"""llama-cpp-python in its own process: a crash or a long answer never stalls the verdict path.

Usage::

    worker = LlmWorker(Path("bundles/default/llm.gguf")).start()   # returns once the model is loaded
    handle = worker.submit("job-1", messages, max_tokens=128, whole_sentences=True)
    for event in handle.drain():                                    # Chunk(job_id, text) ...
        ...                                                          # Final(job_id, ...) / JobError(job_id, ...)
    handle.result(timeout_s=2.0)                                     # or wait for the end: JobResult (None: still running)
    worker.submit("job-2", [{"role": "user", "content": f"{SOFT_PROMPT_MARKER} Any defect?"}],
                  soft_prompt=prompts)                               # (M, n_embd) vectors where the marker is
    worker.cancel("job-1")                                           # stops at the next token: Final, "cancelled"
    worker.restart()                                                 # after it died (see .alive)
    worker.close()

One reader thread per worker takes every event from the process and puts it on the handle of the job it
belongs to (lineguard.runtime.llm.events): any number of threads may share a worker, each reading only
its own jobs. A job whose handle nobody holds any more (the caller dropped it) has its events dropped. When
the process dies or is closed, every job still running ends with a ``JobError`` (``process_died``).

The child runs at a lower CPU priority (``nice``) with few threads, generates deterministically
(temperature 0, fixed seed) and stops at ``max_tokens`` or ``max_seconds``. With ``whole_sentences`` text
is streamed a sentence at a time and an answer cut by either bound ends at its last full sentence
(``SentenceGate``): a technician never reads half a sentence.

A job with a soft prompt is generated greedily through lineguard.runtime.llm.soft_prompt (``chat_segments``
+ ``generate``) instead of ``create_chat_completion``: both are a stream of text pieces read by one loop
(events, gate, bounds, cancels); its ``prompt_tokens`` counts the positions fed, vectors included.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.runtime.llm.events import Chunk, Failed, Final, JobError, JobEvent, JobHandle, Ready
from lineguard.runtime.llm.soft_prompt import Generation, chat_segments, generate

CANCELLED_IDS = 1024  # job ids the child remembers as cancelled (a cancel may arrive after its job ended)


class LlmWorkerError(RuntimeError):
    """The model process could not start or died."""


@dataclass(frozen=True)
class LlmSettings:
    n_ctx: int = 2048
    n_threads: int = 1
    max_tokens: int = 160
    max_seconds: float = 60.0
    nice: int = 10
    seed: int = 0


_SENTENCE_END = re.compile(r"[.!?](?=\s)")


class SentenceGate:
    """Streamed text released a sentence at a time; an answer cut short keeps only its full sentences.

    A sentence ends at ``.``, ``!`` or ``?`` followed by white space (``3.1`` is no end); the text after
    the last end is held until the next arrives, released when the model stops by itself, and dropped
    when a bound (tokens, time) cut the answer, unless nothing else was said (then it ends with "...").
    """

    def __init__(self) -> None:
        self._held = ""
        self.released = 0

    def feed(self, text: str) -> str:
        self._held += text
        ends = list(_SENTENCE_END.finditer(self._held))
        if not ends:
            return ""
        cut = ends[-1].end()
        out, self._held = self._held[:cut], self._held[cut:]
        self.released += len(out)
        return out

    def finish(self, complete: bool) -> str:
        """What is still to send: all of it when the model ended the answer, else only a final full sentence."""
        held, self._held = self._held, ""
        stripped = held.rstrip()
        if complete or (stripped[-1:] in (".", "!", "?") and not stripped[-2:-1].isdigit()):
            return held
        if self.released == 0 and stripped:
            return stripped.rstrip(".,;: ") + "..."
        return ""


def _drain_cancels(cancels: mp.Queue, cancelled: dict[str, None]) -> dict[str, None]:
    with contextlib.suppress(queue.Empty):
        while True:
            cancelled[cancels.get_nowait()] = None
    while len(cancelled) > CANCELLED_IDS:  # oldest first: cancels of jobs that had already ended
        del cancelled[next(iter(cancelled))]
    return cancelled


class _ChatStream:
    """``create_chat_completion``'s stream as text pieces; ``finish_reason`` once the stream said it."""

    def __init__(self, llm: Any, messages: list[dict[str, str]], max_tokens: int, seed: int) -> None:
        self.prompt_tokens = len(llm.tokenize("\n".join(m["content"] for m in messages).encode(), add_bos=True))
        self._chunks = llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, seed=seed,
                                                  max_tokens=max_tokens, stream=True)
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if text := choice.get("delta", {}).get("content"):
                yield text


def _answer(llm: Any, settings: LlmSettings, job: tuple[Any, ...], events: mp.Queue, cancels: mp.Queue,
            cancelled: dict[str, None]) -> None:
    """One job: its text pieces (chat completion, or greedy generation after a soft prompt) as events."""
    job_id, messages, max_tokens, whole_sentences, soft_prompt = job
    gate = SentenceGate() if whole_sentences else None
    start = time.perf_counter()
    limit = max_tokens or settings.max_tokens
    if soft_prompt is None:
        stream: _ChatStream | Generation = _ChatStream(llm, messages, limit, settings.seed)
    else:
        stream = generate(llm, chat_segments(llm, messages, soft_prompt), limit)
    first = None
    completion = 0
    finish = None
    for text in stream:
        completion += 1  # a piece per token ("" while a soft-prompt answer's character is incomplete)
        if text:
            first = first or time.perf_counter()
            if gate is not None:
                text = gate.feed(text)
            if text:
                events.put(Chunk(job_id, text))
        if time.perf_counter() - start > settings.max_seconds:
            finish = "time"
            break
        if job_id in _drain_cancels(cancels, cancelled):
            del cancelled[job_id]
            finish = "cancelled"
            break
    finish = finish or stream.finish_reason or "stop"
    if gate is not None and (rest := gate.finish(complete=finish == "stop")):
        events.put(Chunk(job_id, rest))
    end = time.perf_counter()
    events.put(Final(job_id, prompt_tokens=stream.prompt_tokens, completion_tokens=completion, finish_reason=finish,
                     time_to_first_token_ms=((first or end) - start) * 1e3, total_ms=(end - start) * 1e3))


def _child(model_path: str, settings: LlmSettings, jobs: mp.Queue, events: mp.Queue, cancels: mp.Queue) -> None:
    try:
        os.nice(settings.nice)
        from llama_cpp import Llama

        llm = Llama(model_path=model_path, n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                    seed=settings.seed, verbose=False)
    except Exception as exc:  # reported to the parent, which decides what to do
        events.put(Failed(repr(exc)))
        return
    events.put(Ready())
    cancelled: dict[str, None] = {}
    while True:
        job = jobs.get()
        if job is None:
            return
        job_id = job[0]
        if job_id in _drain_cancels(cancels, cancelled):  # cancelled while it waited in the queue
            del cancelled[job_id]
            events.put(Final(job_id, prompt_tokens=0, completion_tokens=0, finish_reason="cancelled",
                             time_to_first_token_ms=None, total_ms=0.0))
            continue
        try:
            _answer(llm, settings, job, events, cancels, cancelled)
        except Exception as exc:  # e.g. SoftPromptError: vectors that do not fit; the process goes on
            events.put(JobError(job_id, repr(exc)))


class LlmWorker:
    """The model process, its queues and the reader thread that routes its events to the jobs' handles."""

    def __init__(self, model_path: Path, settings: LlmSettings | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings or LlmSettings()
        self._ctx = mp.get_context("spawn")  # no forked copies of sockets or ONNX sessions
        self._process: mp.Process | None = None
        self.restarts = 0
        self._lifecycle = threading.RLock()  # start, close and restart, one at a time
        self._lock = threading.Lock()  # what follows, shared with the reader thread
        self._accepting = False  # loaded and running: submit() queues jobs
        self._closed = False  # close() was called (and no start() since)
        self._pending: dict[str, weakref.ref[JobHandle]] = {}  # job id -> its handle, until its job ended
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()

    def start(self, timeout_s: float = 120.0) -> LlmWorker:
        with self._lifecycle:
            self._closed = False
            self._jobs: mp.Queue = self._ctx.Queue()
            self._events: mp.Queue = self._ctx.Queue()
            self._cancels: mp.Queue = self._ctx.Queue()
            self._process = self._ctx.Process(target=_child, name="lineguard-llm", daemon=True,
                                              args=(str(self.model_path), self.settings, self._jobs, self._events,
                                                    self._cancels))
            self._process.start()
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    event = self._events.get(timeout=0.5)
                    break
                except queue.Empty:
                    if not self._process.is_alive():
                        code = self._process.exitcode
                        self._stop("the LLM process failed to load")
                        raise LlmWorkerError(f"the LLM process exited ({code}) while loading {self.model_path}") from None
                    if time.monotonic() > deadline:
                        self._stop("the LLM process failed to load")
                        raise LlmWorkerError(f"the LLM process did not load {self.model_path} within {timeout_s:.0f} s") from None
            if not isinstance(event, Ready):
                self._stop("the LLM process failed to load")
                raise LlmWorkerError(f"the LLM process could not load {self.model_path}: "
                                     f"{event.message if isinstance(event, Failed) else event!r}")
            self._stop_reader = threading.Event()
            self._reader = threading.Thread(target=self._read, args=(self._process, self._events, self._stop_reader),
                                            name="lineguard-llm-reader", daemon=True)
            with self._lock:
                self._accepting = True
            self._reader.start()
        return self

    @property
    def alive(self) -> bool:
        """Loaded and running: jobs submitted now are answered."""
        return self._accepting and self._process is not None and self._process.is_alive()

    @property
    def closed(self) -> bool:
        """``close()`` was called and the worker not started since."""
        return self._closed

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet ended."""
        return len(self._pending)

    def submit(self, job_id: str, messages: list[dict[str, str]], max_tokens: int | None = None,
               whole_sentences: bool = False, soft_prompt: np.ndarray | None = None) -> JobHandle:
        """Queue a chat job (``job_id`` unique among running jobs); its events arrive on the returned handle.

        ``whole_sentences``: stream whole sentences and end a cut answer at a sentence end. ``soft_prompt``:
        (M, n_embd) float32 vectors fed where one message holds ``SOFT_PROMPT_MARKER`` (greedy generation
        through lineguard.runtime.llm.soft_prompt; vectors that do not fit end the job with a ``JobError``).
        Without a running process the handle ends at once with a ``JobError`` (``process_died``)."""
        handle = JobHandle(job_id, self.cancel)
        with self._lock:
            if self._accepting:
                self._pending[job_id] = weakref.ref(handle)
                self._jobs.put((job_id, messages, max_tokens, whole_sentences, soft_prompt))
                return handle
        handle.put(JobError(job_id, "the LLM process is not running", process_died=True))
        return handle

    def cancel(self, job_id: str) -> None:
        """Stop a job at its next token (or skip it if still queued); it ends with finish_reason "cancelled"."""
        with self._lock:
            if job_id in self._pending and self._accepting:  # an ended job has nothing to stop
                self._cancels.put(job_id)

    def restart(self, unless_closed: bool = False) -> bool:
        """Stop the process (if running) and start a fresh one; jobs still running end with a ``JobError``.

        ``unless_closed``: do nothing (False) when the owner closed the worker. Raises LlmWorkerError when
        the model does not load."""
        with self._lifecycle:
            if unless_closed and self._closed:
                return False
            self._stop("the LLM process was restarted")
            self.restarts += 1
            self.start()
            return True

    def close(self) -> None:
        with self._lifecycle:
            self._closed = True
            self._stop("the LLM process was closed")

    def _stop(self, why: str) -> None:
        with self._lock:
            self._accepting = False
        process, self._process = self._process, None
        if process is None:
            return
        self._stop_reader.set()
        if process.is_alive():
            self._jobs.put(None)
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join(5)
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        self._lost(why)
        for q in (self._jobs, self._cancels):
            q.close()
            q.cancel_join_thread()  # never block on a pipe to a dead process
        self._events.close()

    def _read(self, process: Any, events: mp.Queue, stop: threading.Event) -> None:
        """The reader thread: every event of this process to its job's handle, until it ends or is stopped."""
        while not stop.is_set():
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                if not process.is_alive():
                    if not stop.is_set():  # else closed on purpose: _stop() ends the running jobs
                        self._lost(f"the LLM process died (exit code {process.exitcode})")
                    return
                continue
            except (EOFError, OSError, ValueError):  # the queue was closed under it
                return
            if isinstance(event, (Chunk, Final, JobError)):
                self._deliver(event)

    def _deliver(self, event: JobEvent) -> None:
        with self._lock:
            ref = self._pending.get(event.job_id)
            if not isinstance(event, Chunk):
                self._pending.pop(event.job_id, None)
            handle = ref() if ref is not None else None
        if handle is not None:  # None: its submitter dropped the handle and wants no answer
            handle.put(event)

    def _lost(self, why: str) -> None:
        """The process is gone: no more jobs until a restart, and every running job ends with a JobError."""
        with self._lock:
            self._accepting = False
            lost, self._pending = self._pending, {}
            handles = [handle for ref in lost.values() if (handle := ref()) is not None]
        for handle in handles:
            handle.put(JobError(handle.job_id, why, process_died=True))
