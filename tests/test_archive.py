"""The NG archive: bounded ring, oldest evicted, ids never become paths, disk errors never raise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.archive import FrameArchive, entry_key
from lineguard.runtime.messages import Verdict


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
