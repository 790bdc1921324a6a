"""llama-cpp-python in its own process: a crash or a long answer never stalls the verdict path.

Usage::

    worker = LlmWorker(Path("bundles/default/llm.gguf")).start()   # returns once the model is loaded
    worker.submit("job-1", messages, max_tokens=128, whole_sentences=True)
    for event in worker.events(timeout_s=0.1):                      # ("chunk", id, text) ...
        ...                                                          # ("final", id, stats) / ("error", id, msg)
    worker.cancel("job-1")                                           # stops at the next token: final, "cancelled"
    worker.restart()                                                 # after it died (see .alive)
    worker.close()

The child runs at a lower CPU priority (``nice``) with few threads, generates deterministically
(temperature 0, fixed seed) and stops at ``max_tokens`` or ``max_seconds``. With ``whole_sentences``
text is streamed a sentence at a time and an answer cut by either bound ends at its last full sentence
(``SentenceGate``): a technician never reads half a sentence.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Event = tuple[str, str, Any]


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


def _drain_cancels(cancels: mp.Queue, cancelled: set[str]) -> set[str]:
    with contextlib.suppress(queue.Empty):
        while True:
            cancelled.add(cancels.get_nowait())
    return cancelled


def _child(model_path: str, settings: LlmSettings, jobs: mp.Queue, events: mp.Queue, cancels: mp.Queue) -> None:
    try:
        os.nice(settings.nice)
        from llama_cpp import Llama

        llm = Llama(model_path=model_path, n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                    seed=settings.seed, verbose=False)
    except Exception as exc:  # reported to the parent, which decides what to do
        events.put(("failed", "", repr(exc)))
        return
    events.put(("ready", "", None))
    cancelled: set[str] = set()
    while True:
        job = jobs.get()
        if job is None:
            return
        job_id, messages, max_tokens, whole_sentences = job
        gate = SentenceGate() if whole_sentences else None
        if job_id in _drain_cancels(cancels, cancelled):  # cancelled while it waited in the queue
            cancelled.discard(job_id)
            events.put(("final", job_id, {"prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "cancelled",
                                          "time_to_first_token_ms": None, "total_ms": 0.0}))
            continue
        try:
            start = time.perf_counter()
            first = None
            completion = 0
            finish = "stop"
            prompt_tokens = len(llm.tokenize("\n".join(m["content"] for m in messages).encode(), add_bos=True))
            stream = llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, seed=settings.seed,
                                                max_tokens=max_tokens or settings.max_tokens, stream=True)
            for chunk in stream:
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content")
                if text:
                    first = first or time.perf_counter()
                    completion += 1
                    if gate is not None:
                        text = gate.feed(text)
                    if text:
                        events.put(("chunk", job_id, text))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if time.perf_counter() - start > settings.max_seconds:
                    finish = "time"
                    break
                if job_id in _drain_cancels(cancels, cancelled):
                    cancelled.discard(job_id)
                    finish = "cancelled"
                    break
            if gate is not None and (rest := gate.finish(complete=finish == "stop")):
                events.put(("chunk", job_id, rest))
            end = time.perf_counter()
            events.put(("final", job_id, {
                "prompt_tokens": prompt_tokens, "completion_tokens": completion, "finish_reason": finish,
                "time_to_first_token_ms": ((first or end) - start) * 1e3, "total_ms": (end - start) * 1e3,
            }))
        except Exception as exc:
            events.put(("error", job_id, repr(exc)))


class LlmWorker:
    def __init__(self, model_path: Path, settings: LlmSettings | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings or LlmSettings()
        self._ctx = mp.get_context("spawn")  # no forked copies of sockets or ONNX sessions
        self._process: mp.Process | None = None
        self.restarts = 0

    def start(self, timeout_s: float = 120.0) -> LlmWorker:
        self._jobs: mp.Queue = self._ctx.Queue()
        self._events: mp.Queue = self._ctx.Queue()
        self._cancels: mp.Queue = self._ctx.Queue()
        self._process = self._ctx.Process(target=_child, name="lineguard-llm", daemon=True,
                                          args=(str(self.model_path), self.settings, self._jobs, self._events, self._cancels))
        self._process.start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                kind, _, detail = self._events.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    self.close()
                    raise LlmWorkerError(f"the LLM process exited ({code}) while loading {self.model_path}") from None
                if time.monotonic() > deadline:
                    self.close()
                    raise LlmWorkerError(f"the LLM process did not load {self.model_path} within {timeout_s:.0f} s") from None
        if kind != "ready":
            self.close()
            raise LlmWorkerError(f"the LLM process could not load {self.model_path}: {detail}")
        return self

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def submit(self, job_id: str, messages: list[dict[str, str]], max_tokens: int | None = None,
               whole_sentences: bool = False) -> None:
        """Queue a chat job; ``whole_sentences``: stream whole sentences and end a cut answer at a sentence end."""
        self._jobs.put((job_id, messages, max_tokens, whole_sentences))

    def cancel(self, job_id: str) -> None:
        """Stop a job at its next token (or skip it if still queued); it ends with finish_reason "cancelled"."""
        self._cancels.put(job_id)

    def events(self, timeout_s: float = 0.0) -> Iterator[Event]:
        """Events that are ready now (waits up to ``timeout_s`` for the first)."""
        try:
            yield self._events.get(timeout=timeout_s) if timeout_s > 0 else self._events.get_nowait()
            while True:
                yield self._events.get_nowait()
        except queue.Empty:
            return

    def restart(self) -> None:
        self.close()
        self.restarts += 1
        self.start()

    def close(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            self._jobs.put(None)
            self._process.join(2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        self._process = None
