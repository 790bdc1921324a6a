"""AnomalyGPT's own decision: the LLM answers yes/no to "Is there an anomaly?" from the measured evidence.

Usage::

    inspector.image_evidence = True                     # every frame's top candidate measured, OK frames too
    judge = LlmJudge(LlmWorker(bundle.path("llm.gguf")).start())
    results = inspector.analyze(images, "weave")
    judge.judge_batch([(r.evidence, "weave") for r in results], timeout_s=2.0)   # [True, False, None, ...]
    soft = LlmJudge(worker, grounder=Grounder.for_bundle(bundle, "soft"))    # the prompt learner's soft prompt
    soft.judge_batch([(None, "weave")] * len(results), 2.0, images=[(r.anomaly_map, r.model_rgb) for r in results])
    verdict = judge.decide(results[0].verdict, timeout_s=2.0, evidence=results[0].evidence)
    verdict.decided_by      # "llm", or the vision mode when the LLM timed out, gave no clear yes/no or had no evidence

The prompt holds the evidence (lineguard.runtime.llm.prompts.judge_messages) and never the vision
verdict, its p-value or confidence, so the LLM cannot echo it. The answer is parsed strictly (it must
start with yes or no); anything else, an error or a timeout keeps the vision verdict, so the line never
waits longer than ``timeout_s`` for the LLM.

``judge_batch`` submits all its questions at once and waits for them until one shared deadline; a job
that missed it is cancelled, so the model never keeps answering for nobody. Any number of threads may
judge at once through one judge (each job's answer comes back on its own handle). When the model process
has died the judge restarts it in the background (at most once per ``restart_interval_s``) and every
decision falls back to the vision verdict until it is back. ``stats()`` counts all of it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from lineguard.runtime.contract import ImageEvidence, Verdict
from lineguard.runtime.llm.events import JobHandle
from lineguard.runtime.llm.grounding import Grounder
from lineguard.runtime.llm.prompts import judge_messages, parse_yes_no
from lineguard.runtime.llm.worker import LlmWorker, LlmWorkerError

log = logging.getLogger(__name__)


class LlmJudge:
    def __init__(self, worker: LlmWorker, max_tokens: int = 4, restart_interval_s: float = 5.0,
                 grounder: Grounder | None = None) -> None:
        """``grounder``: text evidence (default), or the prompt learner's soft prompt of each frame (soft,
        both): then ``judge_batch`` needs each frame's (anomaly map, model image)."""
        self.worker = worker
        self.grounder = grounder or Grounder()
        self.max_tokens = max_tokens
        self.restart_interval_s = restart_interval_s
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._restarting: threading.Thread | None = None
        self._last_restart = -float("inf")

    @property
    def fallbacks(self) -> int:
        """Questions without a yes/no from the LLM (unclear answer, error, timeout, no evidence, model down)."""
        return self._counts["fallbacks"]

    @property
    def restarts(self) -> int:
        """Model processes this judge restarted after they died."""
        return self._counts["restarts"]

    def stats(self) -> dict[str, int]:
        """Counts: asked, answered (yes/no), fallbacks and, among those, unclear, errors, timeouts (cancelled
        jobs), model_down (not asked: the process was dead or restarting); restarts, restart_failures."""
        with self._lock:
            return {k: self._counts[k] for k in ("asked", "answered", "fallbacks", "unclear", "errors", "timeouts",
                                                 "model_down", "restarts", "restart_failures")}

    def _count(self, **counts: int) -> None:
        with self._lock:
            self._counts.update(counts)

    def judge_batch(self, requests: Sequence[tuple[ImageEvidence | None, str]], timeout_s: float,
                    images: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[bool | None]:
        """For each (evidence, product): True when the LLM says anomaly, False when it says none, None when it
        gave no clear yes/no, failed or missed the shared deadline ``timeout_s`` from now (counted in
        ``fallbacks``; a job that missed the deadline is cancelled). ``images``: each frame's (anomaly map,
        model RGB), for soft grounding."""
        deadline = time.monotonic() + timeout_s
        answers = self._answers(requests, deadline, images)
        out = [parse_yes_no(a) if a is not None else None for a in answers]
        unclear = sum(1 for a, says in zip(answers, out, strict=True) if a is not None and says is None)
        self._count(answered=len(out) - out.count(None), unclear=unclear, fallbacks=out.count(None))
        return out

    def decide(self, verdict: Verdict, timeout_s: float, evidence: ImageEvidence | None = None,
               image: tuple[np.ndarray, np.ndarray] | None = None) -> Verdict:
        """The LLM's verdict from ``evidence`` (``Inspection.evidence``) and, for soft grounding, ``image`` (the
        frame's anomaly map and model RGB); without what its grounding needs the vision verdict stands."""
        if verdict.verdict not in ("OK", "NG"):
            return verdict
        if (evidence is None and self.grounder.mode != "soft") or (image is None and self.grounder.mode != "text"):
            self._count(fallbacks=1)
            return verdict
        says_anomaly = self.judge_batch([(evidence, verdict.product)], timeout_s,
                                        images=[image] if image is not None else None)[0]
        if says_anomaly is None:
            return verdict
        return verdict.model_copy(update={"verdict": "NG" if says_anomaly else "OK", "decided_by": "llm"})

    def _answers(self, requests: Sequence[tuple[ImageEvidence | None, str]], deadline: float,
                 images: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[str | None]:
        """Raw answers (None: none in time or an error); every job still running at ``deadline`` is cancelled."""
        # no evidence: nothing to judge, unless the soft prompt alone grounds the question
        asked = [i for i, (evidence, _) in enumerate(requests) if evidence is not None or self.grounder.mode == "soft"]
        answers: list[str | None] = [None] * len(requests)
        if not asked or deadline <= time.monotonic():
            return answers
        if not self.worker.alive:
            self._count(model_down=len(asked))
            self._revive()
            return answers
        if self.grounder.mode != "text" and (images is None or len(images) != len(requests)):
            raise ValueError(f"grounding {self.grounder.mode!r} needs each frame's anomaly map and image")
        handles: dict[int, JobHandle] = {}
        for i in asked:
            evidence, product = requests[i]
            vectors = self.grounder.vectors(*images[i]) if images is not None else None
            handles[i] = self.worker.submit(f"judge-{next(self._ids)}",
                                            judge_messages(evidence, product, self.grounder.mode), self.max_tokens,
                                            soft_prompt=vectors)
        self._count(asked=len(handles))
        died = False
        for i, handle in handles.items():
            result = handle.result(max(0.0, deadline - time.monotonic()))
            if result is None:
                handle.cancel()  # missed the deadline: the model stops it, nobody waits for it
                self._count(timeouts=1)
            elif result.error is not None:
                self._count(errors=1)
                died = died or result.error.process_died
            else:
                answers[i] = result.text
        if died:
            log.error("the LLM judge's model process died; restarting it (the vision verdict stands meanwhile)")
            self._revive()
        return answers

    def _revive(self) -> None:
        """Restart the dead model process in the background (never on the verdict path), once at a time."""
        with self._lock:
            if self._restarting is not None and self._restarting.is_alive():
                return
            if time.monotonic() - self._last_restart < self.restart_interval_s or self.worker.closed:
                return
            self._last_restart = time.monotonic()
            self._restarting = threading.Thread(target=self._restart, name="llm-judge-restart", daemon=True)
            self._restarting.start()

    def _restart(self) -> None:
        try:
            if self.worker.restart(unless_closed=True):
                self._count(restarts=1)
                log.info("the LLM judge's model process is back (pid %s)", self.worker.pid)
        except LlmWorkerError as exc:
            self._count(restart_failures=1)
            log.error("the LLM judge could not restart its model process: %s", exc)

    def wait_restarted(self, timeout_s: float) -> bool:
        """Wait for a restart in progress to end (tests, shutdown); True when the model is running."""
        thread = self._restarting
        if thread is not None:
            thread.join(timeout_s)
        return self.worker.alive
