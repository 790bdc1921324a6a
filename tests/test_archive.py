"""The NG archive: bounded ring, oldest evicted, ids never become paths, disk errors never raise; its writer
thread: bounded, in order, calls back after each write."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.contract import Verdict
from lineguard.runtime.line.archive import ArchiveWriter, FrameArchive, entry_key


def _verdict(frame_id: str, kind: str = "NG", camera: str = "cam0") -> Verdict:
    return Verdict(frame_id=frame_id, camera_id=camera, product="weave", verdict=kind, score=9.0, p_value=1e-5)


def _store(archive: FrameArchive, frame_id: str, kind: str = "NG") -> Path | None:
    rng = np.random.default_rng(abs(hash(frame_id)) % 1000)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return archive.store(_verdict(frame_id, kind), rng.random((64, 64), dtype=np.float32), image)


def test_round_trip(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    _store(archive, "f1")
    frame = archive.load("cam0", "f1")
    assert frame is not None and frame.verdict.frame_id == "f1"
    assert frame.image_rgb.shape == (64, 64, 3) and frame.anomaly_map.shape == (64, 64)
    assert archive.find("f1").verdict.verdict == "NG"
    assert archive.load("cam0", "nope") is None and archive.find("nope") is None


def test_ring_evicts_oldest_and_stays_under_cap(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=60_000)
    for i in range(20):
        _store(archive, f"f{i}")
    assert archive.size_bytes <= 60_000
    assert archive.find("f19") is not None and archive.find("f0") is None
    assert len(list(tmp_path.iterdir())) == len(archive)
    # a restart rebuilds the ring from disk
    assert len(FrameArchive(tmp_path, max_bytes=60_000)) == len(archive)


@pytest.mark.parametrize("damage", ["empty image", "no map", "empty map", "torn verdict", "evicted"])
def test_a_damaged_entry_loads_as_none_not_an_exception(tmp_path: Path, damage: str) -> None:
    """An entry evicted while read, or damaged on disk, is "not there" for the HTTP API and the explanation
    port (it used to raise cv2.error out of load and find)."""
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    folder = _store(archive, "f1")
    _store(archive, "f2")
    if damage == "empty image":
        (folder / "image.png").write_bytes(b"")
    elif damage == "no map":
        (folder / "map.npy").unlink()
    elif damage == "empty map":  # what a power cut can leave of a file renamed before its data reached the disk
        (folder / "map.npy").write_bytes(b"")
    elif damage == "torn verdict":
        (folder / "verdict.json").write_text('{"frame_id": "f1", "camera')
    else:
        shutil.rmtree(folder)
    assert archive.load("cam0", "f1") is None and archive.find("f1") is None
    assert archive.load("cam0", "f2") is not None  # its neighbours are untouched


def test_a_damaged_entry_asked_for_again_and_again_does_not_flood_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A panel polling one damaged overlay asks every second: the log gets the 1st, 2nd, 4th, ... load, with
    the count, not one line a request."""
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    (_store(archive, "f1") / "image.png").write_bytes(b"")
    with caplog.at_level("WARNING", logger="lineguard.runtime.line.archive"):
        for _ in range(100):
            assert archive.load("cam0", "f1") is None
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 7 and archive.unreadable == 100  # 1, 2, 4, ..., 64
    assert "f1" in lines[0] and lines[-1].endswith("64 unreadable loads so far)")


def test_storing_a_frame_again_never_pairs_the_old_verdict_with_the_new_files(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    folder = _store(archive, "f1")
    again = _verdict("f1").model_copy(update={"score": 3.0})
    assert archive.store(again, np.ones((32, 32), np.float32), np.zeros((32, 32, 3), np.uint8)) == folder
    frame = archive.load("cam0", "f1")
    assert frame.verdict.score == 3.0 and frame.image_rgb.shape == (32, 32, 3) and frame.anomaly_map.shape == (32, 32)
    assert sorted(p.name for p in folder.iterdir()) == ["image.png", "map.npy", "verdict.json"]  # no temporaries
    assert len(archive) == 1


def test_a_store_again_that_fails_midway_leaves_no_entry_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old verdict must not stand beside the new image, and the index must not keep a folder that is gone."""
    import lineguard.runtime.line.archive as archive_module

    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    _store(archive, "f1")
    _store(archive, "f2")
    real_replace = archive_module._replace

    def disk_full_at_the_map(path: Path, data: bytes) -> None:
        if path.name == "map.npy":
            raise OSError(28, "No space left on device")
        real_replace(path, data)

    monkeypatch.setattr(archive_module, "_replace", disk_full_at_the_map)
    assert archive.store(_verdict("f1"), np.ones((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8)) is None
    assert archive.load("cam0", "f1") is None and archive.find("f1") is None
    assert [v.frame_id for v, _ in archive.recent()] == ["f2"] and len(archive) == 1
    assert archive.size_bytes == sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())


def test_folders_that_are_not_the_rings_own_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "lost+found" / "x").write_bytes(b"x" * 50_000)
    archive = FrameArchive(tmp_path, max_bytes=20_000)
    for i in range(5):
        _store(archive, f"f{i}")
    assert (tmp_path / "lost+found" / "x").is_file()  # never listed, counted or evicted
    assert all(len(p.name) == 32 for p in tmp_path.iterdir() if p.name != "lost+found")


def test_a_restarted_archive_lists_and_finds_from_its_index(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    _store(archive, "f1")
    archive.store(_verdict("o1", "OK"), np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8))
    half = tmp_path / ("0" * 32)  # a crash between mkdir and the verdict: counted (and evictable), never listed
    half.mkdir()
    (half / "image.png").write_bytes(b"x" * 100)
    again = FrameArchive(tmp_path, max_bytes=10 << 20)
    assert len(again) == 3 and again.size_bytes == archive.size_bytes + 100
    assert [v.frame_id for v, _ in again.recent(verdict="OK")] == ["o1"]
    assert [v.frame_id for v, _ in again.recent(verdict=None)] == ["o1", "f1"]
    assert again.find("f1").verdict.verdict == "NG"


def test_ids_never_become_paths(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path / "ring", max_bytes=10 << 20)
    _store(archive, "../../etc/passwd")
    assert [p.name for p in (tmp_path / "ring").iterdir()] == [entry_key("cam0", "../../etc/passwd")]
    assert not (tmp_path / "etc").exists()


def test_ok_frames_are_sampled(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20, ok_sample_every=10)
    kept = [archive.wants(_verdict(f"ok{i}", "OK")) for i in range(30)]
    assert sum(kept) == 3 and kept[0]
    every = FrameArchive(tmp_path / "all", max_bytes=1 << 20, ok_sample_every=1)
    assert all(every.wants(_verdict(f"ok{i}", "OK")) for i in range(5))
    assert archive.wants(_verdict("ng", "NG"))
    assert not FrameArchive(tmp_path / "b", max_bytes=1 << 20).wants(_verdict("ok", "OK"))


def test_disk_failure_is_counted_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    assert _store(archive, "f1") is None
    assert archive.failures == 1 and len(archive) == 0


def test_recent_lists_newest_first_by_class(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20, ok_sample_every=1)
    for frame_id, kind in [("a", "NG"), ("b", "OK"), ("c", "NG"), ("d", "NG")]:
        _store(archive, frame_id, kind)
    assert [v.frame_id for v, _ in archive.recent(limit=2)] == ["d", "c"]
    assert [v.frame_id for v, _ in archive.recent(verdict="OK")] == ["b"]
    listed = archive.recent(limit=10, verdict=None)
    assert [v.frame_id for v, _ in listed] == ["d", "c", "b", "a"]
    assert all(later >= earlier for (_, later), (_, earlier) in zip(listed, listed[1:], strict=False))


# -- the writer thread ------------------------------------------------------------------------------------

class SlowDisk(FrameArchive):
    """Writes wait for ``gate``; ``fail`` makes them raise something store() does not expect."""

    def __init__(self, root: Path, fail: bool = False) -> None:
        super().__init__(root, max_bytes=10 << 20)
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.fail = fail

    def store(self, verdict: Verdict, anomaly_map: np.ndarray, image_rgb: np.ndarray) -> Path | None:
        self.writing.set()
        assert self.gate.wait(10)
        if self.fail:
            raise ValueError("not an image")
        return super().store(verdict, anomaly_map, image_rgb)


def _frame(frame_id: str) -> tuple[Verdict, np.ndarray, np.ndarray]:
    return _verdict(frame_id), np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8)


def test_writer_calls_back_after_the_write_in_order(tmp_path: Path) -> None:
    archive = FrameArchive(tmp_path, max_bytes=10 << 20)
    writer = ArchiveWriter(archive, capacity=8).start()
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def then(frame_id: str) -> Callable[[Path | None], None]:
        def stored(folder: Path | None) -> None:
            seen.append((frame_id, folder is not None and archive.load("cam0", frame_id) is not None))
            if len(seen) == 5:
                done.set()
        return stored

    for i in range(5):
        assert writer.submit(*_frame(f"f{i}"), then=then(f"f{i}"))
    assert done.wait(10)
    assert seen == [(f"f{i}", True) for i in range(5)]  # each in the archive when its callback runs
    assert writer.close(timeout_s=1.0) == 0 and writer.pending == 0


def test_a_full_writer_refuses_and_counts_an_archive_failure(tmp_path: Path) -> None:
    archive = SlowDisk(tmp_path)
    writer = ArchiveWriter(archive, capacity=2).start()
    called: list[str] = []
    assert writer.submit(*_frame("a"), then=lambda _: called.append("a"))
    assert archive.writing.wait(5)  # "a" is being written; two more may wait
    assert writer.submit(*_frame("b"), then=lambda _: called.append("b"))
    assert writer.submit(*_frame("c"), then=lambda _: called.append("c"))
    assert not writer.submit(*_frame("d"), then=lambda _: called.append("d"))  # no room: not kept
    assert writer.pending == 3 and archive.failures == 1 and archive.skipped == 1
    archive.gate.set()
    assert writer.close(timeout_s=5.0) == 0
    assert called == ["a", "b", "c"] and archive.find("d") is None and archive.failures == 1


def test_close_counts_what_it_could_not_write(tmp_path: Path) -> None:
    archive = SlowDisk(tmp_path)
    writer = ArchiveWriter(archive, capacity=4).start()
    called: list[str] = []
    for frame_id in "abc":
        assert writer.submit(*_frame(frame_id), then=lambda _, f=frame_id: called.append(f))
    assert archive.writing.wait(5)
    assert writer.close(timeout_s=0.05) == 2  # "a" is still being written; "b" and "c" are given up
    assert archive.failures == 2 and not writer.submit(*_frame("late"), then=lambda _: None)
    archive.gate.set()
    end = time.monotonic() + 5
    while not called and time.monotonic() < end:
        time.sleep(0.005)
    assert called == ["a"]  # the write in progress still finishes and calls back


def test_a_write_that_raises_still_calls_back(tmp_path: Path) -> None:
    archive = SlowDisk(tmp_path, fail=True)
    archive.gate.set()
    writer = ArchiveWriter(archive).start()
    folders: list[Path | None] = []
    done = threading.Event()
    assert writer.submit(*_frame("x"), then=lambda folder: (folders.append(folder), done.set()))
    assert done.wait(5)
    assert folders == [None] and archive.failures == 1
    assert writer.submit(*_frame("y"), then=lambda _: None)  # the writer lives on
    writer.close()


def test_an_archive_folder_that_cannot_be_one_says_so(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"archive.dir {afile} is a file, not a folder"):
        FrameArchive(afile, max_bytes=1000)
    with pytest.raises(NotADirectoryError, match="cannot make the folder"):
        FrameArchive(afile / "ring", max_bytes=1000)
