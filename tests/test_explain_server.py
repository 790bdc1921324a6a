"""The explanation port with a scripted model: follow-up questions continue the frame's conversation."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq
from test_llm_judge import EVIDENCE, VISION_OK
from test_llm_worker import install_fake_llama

from lineguard.runtime.clients.explain import ask
from lineguard.runtime.contract import ExplainReply, ExplainRequest, Region, Verdict
from lineguard.runtime.line.archive import FrameArchive
from lineguard.runtime.llm import explain_server
from lineguard.runtime.llm.events import Chunk, Final, JobHandle
from lineguard.runtime.llm.explain_server import ExplanationServer
from lineguard.runtime.llm.judge import LlmJudge
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker


class ScriptedWorker:
    """Stands in for the model process: answers job n with "Answer n." and records every prompt."""

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []
        self.alive = True

    def submit(self, job_id, messages, max_tokens=None, whole_sentences=False, soft_prompt=None) -> JobHandle:
        self.prompts.append(messages)
        n = len(self.prompts)
        handle = JobHandle(job_id, self.cancel)
        handle.put(Chunk(job_id, f"Answer {n}."))
        handle.put(Final(job_id, prompt_tokens=1, completion_tokens=2, finish_reason="stop",
                         time_to_first_token_ms=1.0, total_ms=2.0))
        return handle

    def cancel(self, job_id: str) -> None: ...
    def restart(self) -> None: ...
    def close(self) -> None: ...


@pytest.fixture
def port(tmp_path: Path):
    archive = FrameArchive(tmp_path / "archive", max_bytes=50_000_000)
    for frame_id in ("a", "b"):
        verdict = Verdict(frame_id=frame_id, camera_id="cam0", product="weave", verdict="NG", score=9.0, p_value=1e-4,
                          regions=[Region(grid="top left", bbox=(0, 0, 9, 9), area_fraction=0.04, peak=9.0)])
        archive.store(verdict, np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8))
    worker = ScriptedWorker()
    server = ExplanationServer("tcp://127.0.0.1:*", archive, worker).start()  # type: ignore[arg-type]
    yield server, worker, archive
    server.stop()


def said(endpoint: str, frame_id: str, question: str | None = None, follow_up: bool = False) -> str:
    replies = list(ask(endpoint, frame_id, question, idle_timeout_s=10, follow_up=follow_up))
    assert replies[-1].type == "final", replies[-1]
    return "".join(r.text for r in replies if r.type == "chunk")


def test_a_request_that_breaks_is_answered_and_the_port_serves_on(port, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in one request (here the archive's disk) used to end the port's thread: "Why?" was gone
    for the rest of the process while /readyz still said ready."""
    server, _, archive = port
    real_find = archive.find
    monkeypatch.setattr(archive, "find", lambda frame_id: 1 / 0 if frame_id == "a" else real_find(frame_id))
    replies = list(ask(server.endpoint, "a", idle_timeout_s=10))
    assert replies[-1].type == "error" and replies[-1].error.code == "INTERNAL"
    assert "ZeroDivisionError" not in replies[-1].error.message  # the cause goes to the runtime's log, not the page
    assert said(server.endpoint, "b") == "Answer 1."


def test_follow_ups_carry_the_conversation(port) -> None:
    server, worker, _ = port
    assert said(server.endpoint, "a") == "Answer 1."
    assert said(server.endpoint, "a", "What kind of defect could this be?", follow_up=True) == "Answer 2."
    said(server.endpoint, "a", "Could this be a false alarm?", follow_up=True)
    third = worker.prompts[2]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "Inspection findings" in third[1]["content"] and third[2]["content"] == "Answer 1."
    assert "What kind" in third[3]["content"] and third[4]["content"] == "Answer 2."
    assert "false alarm" in third[5]["content"]
    # another frame has its own conversation; a question without follow_up starts a new one
    said(server.endpoint, "b", follow_up=True)
    assert len(worker.prompts[3]) == 2
    said(server.endpoint, "a", "Where?")
    assert len(worker.prompts[4]) == 2 and server.conversations["a"] == [("Where?", "Answer 5.")]


def test_history_is_bounded_and_forgotten_with_the_frame(port, monkeypatch: pytest.MonkeyPatch) -> None:
    server, worker, archive = port
    for i in range(explain_server.MAX_TURNS + 3):
        said(server.endpoint, "a", f"Question {i}?", follow_up=True)
    assert len(server.conversations["a"]) == explain_server.MAX_TURNS
    assert len(worker.prompts[-1]) == 2 + 2 * explain_server.MAX_TURNS
    monkeypatch.setattr(explain_server, "MAX_CONVERSATIONS", 1)
    said(server.endpoint, "b")
    assert list(server.conversations) == ["b"]  # the least recent frame's conversation went
    server.archive = FrameArchive(archive.root.parent / "empty", archive.max_bytes)  # the frame was evicted
    replies = list(ask(server.endpoint, "b", follow_up=True, idle_timeout_s=10))
    assert replies[-1].type == "error" and replies[-1].error.code == "UNKNOWN_FRAME"
    assert "b" not in server.conversations


# ---- through the real worker process (the stand-in llama_cpp of tests/test_llm_worker.py) ----

@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One real worker behind both the explanation port and a judge (the stand-in model echoes questions)."""
    archive = FrameArchive(tmp_path / "archive", max_bytes=50_000_000)
    verdict = Verdict(frame_id="a", camera_id="cam0", product="weave", verdict="NG", score=9.0, p_value=1e-4,
                      regions=[Region(grid="top left", bbox=(0, 0, 9, 9), area_fraction=0.04, peak=9.0)])
    archive.store(verdict, np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8))
    worker = LlmWorker(install_fake_llama(tmp_path / "model", monkeypatch), LlmSettings(nice=0)).start(timeout_s=60)
    server = ExplanationServer("tcp://127.0.0.1:*", archive, worker, max_pending=8).start()
    yield server, LlmJudge(worker)
    server.stop()


def test_explanations_and_judgements_share_a_worker(shared) -> None:
    server, judge = shared
    answers: list[str] = []
    asker = threading.Thread(target=lambda: answers.extend(said(server.endpoint, "a", f"echo q{i}")
                                                           for i in range(8)))
    asker.start()
    decisions = [judge.decide(VISION_OK, timeout_s=20, evidence=EVIDENCE).decided_by for _ in range(16)]
    asker.join(60)
    assert answers == [f"You said q{i}. Done." for i in range(8)]
    assert decisions == ["llm"] * 16 and judge.fallbacks == 0


def test_a_killed_model_fails_the_answer_and_the_next_one_works(shared) -> None:
    server, _ = shared
    replies = []
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(server.endpoint)
    dealer.send(ExplainRequest(frame_id="a", question="slow, please").model_dump_json().encode())
    assert dealer.poll(20_000)  # the first chunk: the model is answering
    replies.append(ExplainReply.model_validate_json(dealer.recv()))
    os.kill(server.worker.pid, signal.SIGKILL)
    while replies[-1].type == "chunk":
        assert dealer.poll(20_000)
        replies.append(ExplainReply.model_validate_json(dealer.recv()))
    dealer.close()
    assert replies[-1].type == "error" and replies[-1].error.code == "LLM_FAILED", replies[-1]
    assert said(server.endpoint, "a", "echo again") == "You said again. Done."
    assert server.worker.restarts == 1 and server.pending == 0


def test_readiness_fails_once_the_ports_thread_is_gone(port) -> None:
    from types import SimpleNamespace

    from lineguard.runtime.line.readiness import Lifecycle, readiness_checks

    server, _, _ = port
    life, batcher = Lifecycle(heartbeat_interval_ms=1000), SimpleNamespace(workers_alive=1)
    assert server.serving and readiness_checks(life, batcher, 1, explanations=server)["explanations"]
    server.stop()
    assert not server.serving and not readiness_checks(life, batcher, 1, explanations=server)["explanations"]


def test_a_taken_explanation_port_is_a_readable_start_error(tmp_path: Path) -> None:
    """It used to die in its thread with a ZMQError traceback and `serve` exited 1 on a RuntimeError."""
    from lineguard.runtime.llm.explain_server import ExplanationPortError

    holder = zmq.Context.instance().socket(zmq.ROUTER)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    try:
        archive = FrameArchive(tmp_path / "archive", max_bytes=1_000_000)
        with pytest.raises(ExplanationPortError, match=f"cannot bind explanations to tcp://127.0.0.1:{port}: "
                                                       "Address already in use"):
            ExplanationServer(f"tcp://127.0.0.1:{port}", archive, ScriptedWorker()).start()  # type: ignore[arg-type]
    finally:
        holder.close(linger=0)
