"""The model worker's real process and reader thread, with a stand-in ``llama_cpp`` (fast, scriptable).

The stand-in is written to a temporary folder put first on ``sys.path``; the worker's spawned child
inherits that path, so it loads the stand-in instead of a model. What is tested is the worker itself:
typed events, each job's events on its own handle whoever else shares the worker, cancellation, death
and restart. (tests/test_llm_judge.py judges through it; tests/test_explanations.py uses the real model.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineguard.runtime.llm.events import Chunk, Final, JobError, JobHandle
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker, LlmWorkerError

FAKE_LLAMA = '''
"""A stand-in for llama_cpp: answers from the prompt, a token every FAKE_LLAMA_TOKEN_S seconds."""
import os
import re
import time


class Llama:
    def __init__(self, model_path, **kwargs):
        if "broken" in model_path:
            raise ValueError("not a model")

    def tokenize(self, data, add_bos=True):
        return data.split()

    def create_chat_completion(self, messages, max_tokens, stream, **kwargs):
        text = messages[-1]["content"]
        delay = float(os.environ.get("FAKE_LLAMA_TOKEN_S", "0.002"))
        score = re.search(r"anomaly score is ([0-9.]+) times", text)
        if "slow" in text:  # e.g. product "slow-weave": a long answer, a second per token
            words, delay = ["Yes", "."] + [" More", "."] * 50, 1.0
        elif score is not None:
            words = ["Yes" if float(score.group(1)) > 1 else "No", "."]
        elif "crash" in text:
            os._exit(3)
        else:
            echo = re.search(r"echo (\\S+)", text)
            words = ["You", " said", " " + (echo.group(1) if echo else "nothing"), ".", " Done", "."]
        for word in words[:max_tokens]:
            time.sleep(delay)
            yield {"choices": [{"delta": {"content": word}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "stop" if len(words) <= max_tokens else "length"}]}
'''


def install_fake_llama(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model path whose worker child loads the stand-in llama_cpp (``broken`` in the name: it fails to load)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llama_cpp.py").write_text(FAKE_LLAMA)
    monkeypatch.syspath_prepend(str(folder))  # the spawned child starts with the parent's sys.path
    return folder / "model.gguf"


@pytest.fixture
def fake_model(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_fake_llama(tmp_path_factory.mktemp("fake_llama"), monkeypatch)


@pytest.fixture
def worker(fake_model: Path) -> Iterator[LlmWorker]:
    worker = LlmWorker(fake_model, LlmSettings(nice=0)).start(timeout_s=60)
    yield worker
    worker.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_events_are_typed_and_each_job_gets_its_own(worker: LlmWorker) -> None:
    handles = [worker.submit(f"job-{i}", ask(f"echo w{i}"), whole_sentences=True) for i in range(6)]
    results = [h.result(timeout_s=30) for h in handles]
    for i, result in enumerate(results):
        assert result is not None and result.error is None
        assert result.text == f"You said w{i}. Done."
        assert isinstance(result.final, Final) and result.final.finish_reason == "stop"
        assert set(result.final.stats()) == {"prompt_tokens", "completion_tokens", "finish_reason",
                                             "time_to_first_token_ms", "total_ms"}
    streamed = worker.submit("stream", ask("echo s"), whole_sentences=True)
    events = []
    while not streamed.done:
        events += [e for e in [streamed.next(5.0)] if e is not None]
    assert [type(e) for e in events] == [Chunk, Chunk, Final]  # a sentence at a time
    assert [e.text for e in events[:2]] == ["You said s.", " Done."]
    assert worker.pending == 0  # nothing left over


def test_threads_sharing_a_worker_never_see_each_others_events(worker: LlmWorker) -> None:
    answers: dict[str, str] = {}
    errors: list[BaseException] = []

    def user(name: str) -> None:
        try:
            for i in range(15):
                result = worker.submit(f"{name}-{i}", ask(f"echo {name}{i}")).result(timeout_s=30)
                assert result is not None
                answers[f"{name}-{i}"] = result.text
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(name,)) for name in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert answers == {f"{n}-{i}": f"You said {n}{i}. Done." for n in "abc" for i in range(15)}


def test_cancel_stops_a_running_job_and_skips_a_queued_one(worker: LlmWorker) -> None:
    running = worker.submit("running", ask("slow-weave"), max_tokens=50)
    queued = worker.submit("queued", ask("slow-weave"), max_tokens=50)
    assert isinstance(running.next(10.0), Chunk)
    started = time.monotonic()
    queued.cancel()
    worker.cancel("running")
    result = running.result(timeout_s=10)
    assert result is not None and result.final is not None and result.final.finish_reason == "cancelled"
    assert time.monotonic() - started < 3  # at the next token, not after 50
    result = queued.result(timeout_s=10)
    assert result is not None and result.final is not None
    assert (result.final.finish_reason, result.final.completion_tokens) == ("cancelled", 0)


def test_a_dead_process_ends_its_jobs_and_restarts(worker: LlmWorker) -> None:
    running = worker.submit("long", ask("slow-weave"), max_tokens=50)
    queued = worker.submit("next", ask("echo x"))
    assert isinstance(running.next(10.0), Chunk)
    os.kill(worker.pid, signal.SIGKILL)
    for handle in (running, queued):
        result = handle.result(timeout_s=5)
        assert result is not None and isinstance(result.error, JobError) and result.error.process_died
    assert not worker.alive
    late = worker.submit("late", ask("echo y"))  # no process: ends at once
    result = late.result(timeout_s=0.1)
    assert result is not None and result.error is not None and result.error.process_died
    assert worker.restart(unless_closed=True) and worker.alive and worker.restarts == 1
    result = worker.submit("again", ask("echo z")).result(timeout_s=30)
    assert result is not None and result.text == "You said z. Done."
    crash = worker.submit("crash", ask("crash")).result(timeout_s=10)  # the model itself exits mid-job
    assert crash is not None and crash.error is not None and crash.error.process_died
    worker.close()
    assert worker.closed and not worker.restart(unless_closed=True) and not worker.alive


def test_a_model_that_does_not_load_is_an_error(fake_model: Path) -> None:
    with pytest.raises(LlmWorkerError, match="not a model"):
        LlmWorker(fake_model.with_name("broken.gguf"), LlmSettings(nice=0)).start(timeout_s=60)


def test_handle_without_a_worker() -> None:
    """The handle is what fakes hand out too: events in order, the end remembered, cancel once."""
    cancelled: list[str] = []
    handle = JobHandle("j", cancelled.append)
    assert handle.result(timeout_s=0.01) is None
    handle.put(Chunk("j", "Yes"))
    handle.cancel()
    handle.put(Final("j", 1, 1, "cancelled", 1.0, 2.0))
    result = handle.result(timeout_s=1)
    assert result is not None and result.text == "Yes" and result.final is not None and handle.done
    handle.cancel()  # ended: nothing to stop
    assert cancelled == ["j"] and handle.next() is None
