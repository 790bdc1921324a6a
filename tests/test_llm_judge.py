"""The LLM's yes/no verdict: parsed strictly, the vision verdict is the fallback, the verdict says who decided."""

from __future__ import annotations

import pytest

from lineguard.runtime.llm_judge import LlmJudge
from lineguard.runtime.messages import Verdict


class ScriptedWorker:
    """Stands in for the model process: answers every job with a fixed text (or never)."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.jobs: list[str] = []

    def submit(self, job_id, messages, max_tokens=None) -> None:
        self.jobs.append(job_id)

    def events(self, timeout_s: float = 0.0):
        if self.answer is None or not self.jobs:
            return iter(())
        job = self.jobs.pop()
        return iter([("chunk", job, self.answer), ("final", job, {"completion_tokens": 1})])


VISION_OK = Verdict(product="weave", verdict="OK", decided_by="few-shot", score=4.0, p_value=0.5)


@pytest.mark.parametrize("answer, verdict, decided_by", [
    ("Yes.", "NG", "llm"), ("no", "OK", "llm"), ("Maybe, hard to say", "OK", "few-shot"), (None, "OK", "few-shot"),
])
def test_decisions_and_fallbacks(answer: str | None, verdict: str, decided_by: str) -> None:
    judge = LlmJudge(ScriptedWorker(answer))
    out = judge.decide(VISION_OK, timeout_s=0.3)
    assert (out.verdict, out.decided_by) == (verdict, decided_by)
    assert judge.fallbacks == (decided_by != "llm")


def test_error_verdicts_are_not_judged() -> None:
    error = Verdict(product="weave", verdict="TIMEOUT")
    assert LlmJudge(ScriptedWorker("Yes")).decide(error, 0.1) is error
