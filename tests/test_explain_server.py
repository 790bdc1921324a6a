"""The explanation port with a scripted model: follow-up questions continue the frame's conversation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime import explain_server
from lineguard.runtime.archive import FrameArchive
from lineguard.runtime.explain_client import ask
from lineguard.runtime.explain_server import ExplanationServer
from lineguard.runtime.messages import Region, Verdict


class ScriptedWorker:
    """Stands in for the model process: answers job n with "Answer n." and records every prompt."""

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []
        self._events: list[tuple[str, str, object]] = []
        self.alive = True

    def submit(self, job_id, messages, max_tokens=None, whole_sentences=False) -> None:
        self.prompts.append(messages)
        n = len(self.prompts)
        self._events += [("chunk", job_id, f"Answer {n}."),
                         ("final", job_id, {"prompt_tokens": 1, "completion_tokens": 2, "finish_reason": "stop",
                                            "time_to_first_token_ms": 1.0, "total_ms": 2.0})]

    def events(self, timeout_s: float = 0.0):
        events, self._events = self._events, []
        return iter(events)

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
