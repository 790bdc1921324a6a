"""The LLM's yes/no verdict: parsed strictly, the vision verdict is the fallback, the verdict says who decided."""

from __future__ import annotations

import pytest

from lineguard.runtime.llm_judge import LlmJudge
from lineguard.runtime.messages import ImageEvidence, Region, RegionEvidence, Verdict


class ScriptedWorker:
    """Stands in for the model process: answers every job with a fixed text (or never)."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.jobs: list[str] = []
        self.prompts: list[list[dict[str, str]]] = []

    def submit(self, job_id, messages, max_tokens=None, whole_sentences=False) -> None:
        self.jobs.append(job_id)
        self.prompts.append(messages)

    def events(self, timeout_s: float = 0.0):
        if self.answer is None or not self.jobs:
            return iter(())
        job = self.jobs.pop()
        return iter([("chunk", job, self.answer), ("final", job, {"completion_tokens": 1})])


VISION_OK = Verdict(product="weave", verdict="OK", decided_by="few-shot", score=4.0, p_value=0.5)
TOP = Region(grid="top left", bbox=(1, 2, 30, 30), area_fraction=0.043, peak=7.5, evidence=RegionEvidence(
    brightness="lower", grey_delta=-41.0, grey_delta_sigma=-8.2, texture="unchanged", contrast_ratio=1.0,
    shape="elongated", shape_from="core", elongation=9.0, solidity=0.6, area_px=300, area_percent=0.6,
    length_px=90.0, width_px=3.3, peak_vs_normals=1.8, normals_compared=24, likely_kind="scratch or crack",
    kind_certainty="likely"))
EVIDENCE = ImageEvidence(score_vs_normals=1.8, normals_compared=24, candidates=1, top=TOP)


@pytest.mark.parametrize("answer, verdict, decided_by", [
    ("Yes.", "NG", "llm"), ("no", "OK", "llm"), ("Maybe, hard to say", "OK", "few-shot"), (None, "OK", "few-shot"),
])
def test_decisions_and_fallbacks(answer: str | None, verdict: str, decided_by: str) -> None:
    judge = LlmJudge(ScriptedWorker(answer))
    out = judge.decide(VISION_OK, timeout_s=0.3, evidence=EVIDENCE)
    assert (out.verdict, out.decided_by) == (verdict, decided_by)
    assert judge.fallbacks == (decided_by != "llm")


def test_error_verdicts_are_not_judged() -> None:
    error = Verdict(product="weave", verdict="TIMEOUT")
    assert LlmJudge(ScriptedWorker("Yes")).decide(error, 0.1) is error


@pytest.mark.parametrize("vision", [VISION_OK, VISION_OK.model_copy(update={"verdict": "NG", "p_value": 1e-9,
                                                                             "regions": [TOP]})])
def test_the_judge_sees_evidence_never_the_vision_verdict(vision: Verdict) -> None:
    worker = ScriptedWorker("yes")
    LlmJudge(worker).decide(vision, timeout_s=0.3, evidence=EVIDENCE)
    prompt = "\n".join(m["content"] for m in worker.prompts[0])
    assert "darker than normal parts by 41 grey levels" in prompt and "top left" in prompt and "1.80 times" in prompt
    for leak in ("NG", "OK", "Verdict", "verdict", "rejected", "Confidence", "p-value", "very high"):
        assert leak not in prompt
    assert "scratch" not in prompt  # the class is a conclusion, not a measurement


def test_without_evidence_the_vision_verdict_stands() -> None:
    worker = ScriptedWorker("yes")
    judge = LlmJudge(worker)
    assert judge.decide(VISION_OK, timeout_s=0.1) == VISION_OK and not worker.prompts and judge.fallbacks == 1
