"""AnomalyGPT's own decision: the LLM answers yes/no to "Is there an anomaly?" from the measured evidence.

Usage::

    inspector.image_evidence = True                     # every frame's top candidate measured, OK frames too
    judge = LlmJudge(LlmWorker(bundle.path("llm.gguf")).start())
    result = inspector.analyze([image], "weave")[0]
    verdict = judge.decide(result.verdict, timeout_s=2.0, evidence=result.evidence)
    verdict.decided_by      # "llm", or the vision mode when the LLM timed out, gave no clear yes/no or had no evidence

The prompt holds the evidence (lineguard.runtime.explain_prompt.judge_messages) and never the vision
verdict, its p-value or confidence, so the LLM cannot echo it. The answer is parsed strictly (it must
start with yes or no); anything else, an error or a timeout keeps the vision verdict, so the line never
waits longer than ``timeout_s`` for the LLM.
"""

from __future__ import annotations

import itertools
import time

from lineguard.runtime.explain_prompt import judge_messages, parse_yes_no
from lineguard.runtime.llm_worker import LlmWorker
from lineguard.runtime.messages import ImageEvidence, Verdict


class LlmJudge:
    def __init__(self, worker: LlmWorker, max_tokens: int = 4) -> None:
        self.worker = worker
        self.max_tokens = max_tokens
        self._ids = itertools.count()
        self.fallbacks = 0

    def answer(self, evidence: ImageEvidence, product: str, timeout_s: float) -> str | None:
        """The LLM's raw answer, or None on timeout or error."""
        job = f"judge-{next(self._ids)}"
        self.worker.submit(job, judge_messages(evidence, product), self.max_tokens)
        text: list[str] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            for kind, job_id, detail in self.worker.events(min(left, 0.1)):
                if job_id != job:
                    continue
                if kind == "chunk":
                    text.append(detail)
                elif kind == "final":
                    return "".join(text)
                else:
                    return None
        return None  # a late answer for this job is ignored by its id

    def decide(self, verdict: Verdict, timeout_s: float, evidence: ImageEvidence | None = None) -> Verdict:
        """The LLM's verdict from ``evidence`` (``Inspection.evidence``); without evidence the vision verdict stands."""
        if verdict.verdict not in ("OK", "NG"):
            return verdict
        answer = self.answer(evidence, verdict.product, timeout_s) if evidence is not None else None
        says_anomaly = parse_yes_no(answer) if answer is not None else None
        if says_anomaly is None:
            self.fallbacks += 1
            return verdict
        return verdict.model_copy(update={"verdict": "NG" if says_anomaly else "OK", "decided_by": "llm"})
