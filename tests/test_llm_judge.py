"""The LLM's yes/no verdict: parsed strictly, the vision verdict is the fallback, the verdict says who decided."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_llm_worker import install_fake_llama

from lineguard.runtime.contract import ImageEvidence, Region, RegionEvidence, Verdict
from lineguard.runtime.llm.events import Chunk, Final, JobHandle
from lineguard.runtime.llm.judge import LlmJudge
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker


class ScriptedWorker:
    """Stands in for the model process: answers every job with a fixed text (or never), on the job's handle."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.jobs: list[str] = []
        self.prompts: list[list[dict[str, str]]] = []
        self.cancelled: list[str] = []
        self.alive = True
        self.closed = False

    def submit(self, job_id, messages, max_tokens=None, whole_sentences=False, soft_prompt=None) -> JobHandle:
        self.jobs.append(job_id)
        self.prompts.append(messages)
        handle = JobHandle(job_id, self.cancelled.append)
        if self.answer is not None:
            handle.put(Chunk(job_id, self.answer))
            handle.put(Final(job_id, 10, 1, "stop", 1.0, 2.0))
        return handle


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
    assert judge.stats()["timeouts"] == (answer is None)


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


def test_a_batch_shares_one_deadline_and_cancels_what_missed_it() -> None:
    worker = ScriptedWorker(None)  # never answers
    judge = LlmJudge(worker)
    started = time.monotonic()
    assert judge.judge_batch([(EVIDENCE, "weave")] * 3, timeout_s=0.3) == [None, None, None]
    assert time.monotonic() - started < 1.0  # one deadline for all, not one each
    assert worker.cancelled == worker.jobs and len(worker.jobs) == 3
    assert judge.fallbacks == 3 and judge.stats()["timeouts"] == 3
    assert judge.judge_batch([(EVIDENCE, "weave")], timeout_s=0.0) == [None] and len(worker.jobs) == 3  # not asked
    assert judge.judge_batch([], timeout_s=1.0) == []


def test_a_batch_answers_in_order() -> None:
    judge = LlmJudge(ScriptedWorker("Yes, there is."))
    assert judge.judge_batch([(EVIDENCE, "weave"), (EVIDENCE, "tile")], timeout_s=1.0) == [True, True]
    assert judge.fallbacks == 0 and judge.stats()["answered"] == 2


# ---- through the real worker process (the stand-in llama_cpp of tests/test_llm_worker.py) ----

NORMAL = EVIDENCE.model_copy(update={"score_vs_normals": 0.6})  # the stand-in says no below 1x the normals


@pytest.fixture
def judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LlmJudge]:
    model = install_fake_llama(tmp_path, monkeypatch)
    judge = LlmJudge(LlmWorker(model, LlmSettings(nice=0)).start(timeout_s=60), restart_interval_s=0.0)
    yield judge
    judge.worker.close()


def test_two_threads_judging_through_one_judge_get_their_own_answers(judge: LlmJudge) -> None:
    """Two batcher workers share one judge: every decision is the LLM's, none lost to the other thread."""
    got: dict[str, list[object]] = {"decide": [], "batch": []}

    def one_by_one() -> None:
        for i in range(12):
            evidence = EVIDENCE if i % 2 else NORMAL
            got["decide"].append(judge.decide(VISION_OK, timeout_s=20, evidence=evidence).verdict)

    def in_batches() -> None:
        for _ in range(4):
            got["batch"] += judge.judge_batch([(NORMAL, "weave"), (EVIDENCE, "weave"), (NORMAL, "tile")], 20)

    threads = [threading.Thread(target=one_by_one), threading.Thread(target=in_batches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got["decide"] == ["OK", "NG"] * 6
    assert got["batch"] == [False, True, False] * 4
    assert judge.fallbacks == 0 and judge.stats()["asked"] == 24 and judge.worker.pending == 0


def test_a_timed_out_judgement_is_cancelled_in_the_model(judge: LlmJudge) -> None:
    started = time.monotonic()
    assert judge.judge_batch([(EVIDENCE, "slow-weave")], timeout_s=0.5) == [None]  # a second per token
    assert time.monotonic() - started < 1.5 and judge.stats()["timeouts"] == 1
    # the model is free again: the next question is answered at once, not after the abandoned one (a second
    # per token: without the cancel it would wait for the rest of the abandoned answer first)
    assert judge.judge_batch([(EVIDENCE, "weave")], timeout_s=3.0) == [True]


def test_a_killed_model_is_restarted_and_falls_back_meanwhile(judge: LlmJudge) -> None:
    assert judge.decide(VISION_OK, 20, EVIDENCE).decided_by == "llm"
    os.kill(judge.worker.pid, signal.SIGKILL)
    started = time.monotonic()
    assert judge.decide(VISION_OK, 5, EVIDENCE) == VISION_OK  # the vision verdict stands, without waiting 5 s
    assert time.monotonic() - started < 2
    assert judge.wait_restarted(60)
    assert judge.decide(VISION_OK, 20, EVIDENCE).decided_by == "llm"
    stats = judge.stats()
    assert stats["restarts"] == judge.restarts == judge.worker.restarts == 1 and stats["fallbacks"] == 1
