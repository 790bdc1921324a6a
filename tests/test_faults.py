"""Faults on a live line (loopback, real bundle): each ends with one verdict per frame and a line that serves on.

* an inference worker killed mid-batch: its frames are answered WORKER_FAILED, a new worker takes over;
* the archive disk full (writes answered ENOSPC by the kernel): verdicts continue, the alarm goes up;
* a camera restarts: the new connection's frames are judged, seq stays gap-free;
* the runtime restarts on the same state file: new boot_id, seq from 1, lifetime totals continue, and a
  subscriber learns how many verdicts of the old boot it missed.

(A subscriber restart: ``test_server.py::test_restarted_subscriber_sees_the_gap``; the LLM process
killed mid-answer: ``test_explanations.py::test_llm_killed_mid_answer_then_next_request_works``.)
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import zmq
from line_helpers import LOOPBACK, frame, until, verdicts_of, wait_for, watch

from lineguard.runtime.clients.camera import CameraPusher
from lineguard.runtime.contract import Verdict
from lineguard.runtime.line.archive import entry_key, temporary_path
from lineguard.runtime.line.assembly import ServerError
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.line.state import LineStateFile
from lineguard.runtime.scoring.inspector import Inspection, Inspector

CTX = zmq.Context.instance()


@pytest.fixture(scope="module")
def inspector(enrolled_dir: Path) -> Inspector:
    return Inspector(enrolled_dir)


def config(**fields: object) -> LineConfig:
    return LineConfig(**{"line": "f", "endpoints": LOOPBACK, "deadline_ms": 30_000, "heartbeat_interval_ms": 100,
                         "products": ["weave"], **fields})


def inspect(server: LineServer, frame_id: str, image: np.ndarray, camera: str = "plc") -> Verdict:
    """One trigger, one answer (REQ), bounded by a timeout."""
    req = CTX.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(server.endpoints.inspect)
    try:
        req.send_multipart(frame(camera, frame_id, image))
        assert req.poll(30_000), f"no reply for {frame_id}"
        return Verdict.model_validate_json(req.recv())
    finally:
        req.close()


# -- an inference worker killed mid-batch ------------------------------------------------------------

class WorkerKilled(BaseException):
    """Injected: a fault that no ``except Exception`` stops, as when a worker is torn down mid-batch."""


class KillableInspector:
    """The real inspector; after ``arm(n)`` the next n batches kill their worker halfway through."""

    def __init__(self, inner: Inspector) -> None:
        self.inner = inner
        self.kills_left = 0
        self.killed_batches: list[int] = []
        self._lock = threading.Lock()

    def arm(self, batches: int = 1) -> None:
        with self._lock:
            self.kills_left = batches

    def __getattr__(self, name: str) -> object:  # bundle, products, input_size, ... of the real one
        return getattr(self.inner, name)

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]:
        with self._lock:
            kill = self.kills_left > 0
            self.kills_left -= kill
        if kill:
            self.inner.analyze(images[: max(1, len(images) // 2)], product)  # part of the batch is done ...
            self.killed_batches.append(len(images))
            raise WorkerKilled(f"worker torn down in a batch of {len(images)}")  # ... when the worker dies
        return self.inner.analyze(images, product)


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_killed_mid_batch_answers_its_frames_and_the_pool_recovers(inspector, weave_parts, workers) -> None:
    killable = KillableInspector(inspector)
    server = LineServer(killable, config(batching={"max_batch": 4, "max_queue_delay_ms": 300,
                                                   "workers": workers})).start(timeout_s=60)
    try:
        watcher = watch(server)
        push = CTX.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(server.endpoints.frames)
        killable.arm(1)
        for i in range(4):  # one full batch: the one that kills its worker
            push.send_multipart(frame("cam0", f"doomed{i}", weave_parts[4 + i]))
        first = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 4, settle_s=0.2))
        assert killable.killed_batches == [4]
        assert Counter((v.verdict, v.error.code if v.error else None) for v in first) == {("ERROR", "WORKER_FAILED"): 4}
        assert all("worker died" in v.error.message for v in first)

        wait_for(lambda: server.batcher.worker_restarts == 1 and server.batcher.workers_alive == workers)
        for i in range(6):  # the pool serves on
            push.send_multipart(frame("cam0", f"after{i}", weave_parts[8 + i]))
        after = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 6, settle_s=0.3))
        assert sorted(v.frame_id for v in after) == [f"after{i}" for i in range(6)]
        assert {v.verdict for v in after} == {"OK"}
        seqs = [v.seq for v in first + after]
        assert sorted(seqs) == list(range(1, 11))  # exactly one verdict each, no gap
        beat = server.heartbeat()
        assert beat.worker_restarts == 1 and beat.errors["WORKER_FAILED"] == 4 and beat.ready
        push.close()
        watcher.close()
    finally:
        server.stop(timeout_s=10)


# -- archive disk full --------------------------------------------------------------------------------

def fill_disk_for(archive_dir: Path, camera: str, frame_ids: Sequence[str]) -> None:
    """Writes of these frames' images go to /dev/full, where the kernel answers ENOSPC: a full disk (the archive
    writes each file to its temporary path, then renames it into place)."""
    for frame_id in frame_ids:
        folder = archive_dir / entry_key(camera, frame_id)
        folder.mkdir(parents=True)
        temporary_path(folder / "image.png").symlink_to("/dev/full")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_archive_disk_full_keeps_verdicts_going_and_raises_the_alarm(inspector, weave_parts, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lineguard.runtime.line.archive")
    ring = tmp_path / "ring"
    full = [f"full{i}" for i in range(3)]
    with LineServer(inspector, config(archive={"dir": str(ring), "ok_sample_every": 1})) as server:
        fill_disk_for(ring, "plc", full)
        watcher = watch(server)
        replies = [inspect(server, f, weave_parts[4 + i]) for i, f in enumerate(full)]
        assert [r.verdict for r in replies] == ["OK"] * 3  # verdicts continue while nothing can be kept
        assert server.archive.failures == 3 and server.archive.failing
        alarm = next(e.heartbeat for e in until(watcher, lambda ev: any(
            e.kind == "heartbeat" and e.heartbeat.archive_failures == 3 for e in ev)) if e.kind == "heartbeat"
            and e.heartbeat.archive_failures == 3)
        assert alarm.ready and alarm.verdicts["OK"] == 3
        assert inspect(server, "room-again", weave_parts[8]).verdict == "OK"  # space is back
        watcher.close()
    alarms = [r for r in caplog.records if r.levelno == logging.ERROR and "ALARM" in r.getMessage()]
    assert len(alarms) == 1 and "No space left on device" in alarms[0].getMessage()  # once, not per frame
    assert any("writes work again" in r.getMessage() for r in caplog.records)
    from lineguard.runtime.line.archive import FrameArchive

    archive = FrameArchive(ring, max_bytes=1 << 30)
    assert archive.load("plc", "room-again") is not None
    assert all(archive.load("plc", f) is None for f in full)
    assert not any((ring / entry_key("plc", f)).exists() for f in full)  # no half-written entries left


# -- a camera restarts ---------------------------------------------------------------------------------

def test_camera_restart_mid_stream(inspector, weave_parts) -> None:
    with LineServer(inspector, config()) as server:
        watcher = watch(server)
        with CameraPusher(server.endpoints.frames, "cam0", [], product="weave") as camera:
            for i in range(3):
                assert camera.push(weave_parts[4 + i], frame_id=f"a{i}")
        # the camera process is gone (socket closed, pending frames flushed within linger) and comes back
        with CameraPusher(server.endpoints.frames, "cam0", [], product="weave") as camera:
            for i in range(3):
                assert camera.push(weave_parts[7 + i], frame_id=f"b{i}")
        events = until(watcher, lambda ev: len(verdicts_of(ev)) >= 6, settle_s=0.3)
        verdicts = verdicts_of(events)
        assert sorted(v.frame_id for v in verdicts) == ["a0", "a1", "a2", "b0", "b1", "b2"]
        assert {v.verdict for v in verdicts} == {"OK"}
        assert sorted(v.seq for v in verdicts) == list(range(1, 7)) and "gap" not in [e.kind for e in events]
        watcher.close()


# -- the runtime restarts on its state file --------------------------------------------------------------

@pytest.fixture
def restart_config(tmp_path: Path) -> Iterator[LineConfig]:
    yield config(state_file=str(tmp_path / "state" / "f.json"))


def test_runtime_restart_keeps_lifetime_counters_and_tells_subscribers(inspector, weave_parts,
                                                                       restart_config: LineConfig) -> None:
    first = LineServer(inspector, restart_config).start(timeout_s=60)
    try:
        watcher = watch(first)
        seen = [inspect(first, f"a{i}", weave_parts[4 + i]) for i in range(2)]
        until(watcher, lambda ev: len(verdicts_of(ev)) >= 2)
        watcher.socket.close()  # the subscriber goes away ...
        missed = [inspect(first, f"a{i}", weave_parts[4 + i]) for i in range(2, 4)]
        bad = CTX.socket(zmq.PUSH)
        bad.setsockopt(zmq.LINGER, 1000)
        bad.connect(first.endpoints.frames)
        bad.send_multipart([b"\x00not json", b"x"])  # too broken to address: dropped, counted
        bad.close()
        wait_for(lambda: first.heartbeat().dropped == 1)
    finally:
        first.stop(timeout_s=10)
    assert [v.seq for v in seen + missed] == [1, 2, 3, 4]
    saved = json.loads(Path(restart_config.state_file).read_text())
    assert saved["last_boot"] == {**saved["last_boot"], "boot_id": first.boot_id, "last_verdict_seq": 4,
                                  "clean_stop": True}
    assert saved["totals"]["boots"] == 1 and saved["totals"]["verdicts_out"] == 4 and saved["totals"]["dropped"] == 1

    # the same endpoints, so the subscriber and cameras reconnect by themselves
    second = LineServer(inspector, restart_config.model_copy(update={"endpoints": first.endpoints})).start(timeout_s=60)
    try:
        watcher.reconnect()  # ... and comes back after the restart
        events = until(watcher, lambda ev: any(e.kind == "restart" for e in ev))
        assert second.boot_id != first.boot_id
        gap = next(e for e in events if e.kind == "gap")
        assert gap.missing == 2 and first.boot_id in gap.message  # seq 3 and 4 of the old boot
        after = inspect(second, "b0", weave_parts[8])
        assert after.verdict == "OK" and after.seq == 1  # seq starts over; the boot_id tells the boots apart
        events = until(watcher, lambda ev: len(verdicts_of(ev)) >= 1, settle_s=0.2)
        assert [v.frame_id for v in verdicts_of(events)] == ["b0"] and "gap" not in [e.kind for e in events]
        beat = second.heartbeat()
        assert beat.previous_boot.boot_id == first.boot_id and beat.previous_boot.clean_stop
        lifetime = beat.lifetime
        assert (lifetime.boots, lifetime.verdicts_out, lifetime.frames_in, lifetime.dropped) == (2, 5, 6, 1)
        assert lifetime.verdicts == {"OK": 5} and lifetime.errors == {"BAD_HEADER": 1}
        assert lifetime.replies_out == 5 and beat.verdicts_out == 1
        watcher.close()
    finally:
        second.stop(timeout_s=10)
    assert json.loads(Path(restart_config.state_file).read_text())["totals"]["verdicts_out"] == 5


def test_state_file_of_another_line_is_refused_and_a_corrupt_one_set_aside(inspector, tmp_path: Path) -> None:
    state = tmp_path / "line.json"
    state.write_text('{"schema_version": 1, "line": "other", "totals": {}}')
    with pytest.raises(ServerError, match="belongs to line 'other'"):
        LineServer(inspector, config(state_file=str(state)))
    state.write_text('{"schema_version": 1, "line": "f", "totals": {"boo')  # torn by a crash mid-write
    fresh = LineStateFile(state, "f").load()
    assert fresh.totals.boots == 0 and fresh.last_boot is None
    assert not state.exists() and len(list(tmp_path.glob("line.json.corrupt-*"))) == 1
