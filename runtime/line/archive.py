"""Bounded on-disk ring of inspected frames (every NG frame and a sample of OK frames, with their maps), and
the writer thread that fills it.

For audit, the technician's panel and LLM explanations. Oldest entries are evicted when the ring
exceeds its byte cap; a failing disk never stops verdicts (``store`` returns None and counts it in
``failures``, which the service's heartbeat carries as ``archive_failures``). The alarm is logged once
when writes start failing (ERROR) and once when they work again, not once per frame.

Usage::

    archive = FrameArchive(Path("/var/lib/lineguard/archive"), max_bytes=2 << 30, ok_sample_every=100)
    archive.store(verdict, inspection.anomaly_map, inspection.model_rgb)
    frame = archive.load("cam0", "frame-000123")      # ArchivedFrame(verdict, image_rgb, anomaly_map)

    writer = ArchiveWriter(archive, capacity=32).start()
    if not writer.submit(verdict, anomaly_map, image_rgb, then=lambda folder: publish(verdict)):
        publish(verdict)            # the writer is full: counted as an archive failure, published at once
    writer.close(timeout_s=1.0)     # drains what is queued

:class:`ArchiveWriter` takes PNG encoding and disk writes off the inference thread: the line service hands it
each frame to keep and publishes that frame's verdict from ``then``, after the write, so a client holding
an NG verdict can always ask for its explanation. It holds at most ``capacity`` frames; beyond that a frame is
not kept (counted in ``failures``) and its verdict goes out at once: a slow disk never holds verdicts back.

Folder names are hashes of (camera_id, frame_id): ids from the wire never become paths.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.contract import Verdict

log = logging.getLogger(__name__)


@dataclass
class ArchivedFrame:
    verdict: Verdict
    image_rgb: np.ndarray
    anomaly_map: np.ndarray


@dataclass(frozen=True)
class _Entry:
    """One kept frame in the ring's index: what listing and lookup need without reading the disk."""

    folder: Path
    size: int
    verdict: str = ""  # OK / NG ...; "" for a folder whose verdict.json could not be read at start
    camera_id: str = ""
    frame_id: str = ""


def _indexed(folder: Path) -> _Entry:
    try:
        verdict = Verdict.model_validate_json((folder / "verdict.json").read_bytes())
    except (OSError, ValueError):  # half-written before a crash: kept for eviction, never listed
        return _Entry(folder, _folder_size(folder))
    return _Entry(folder, _folder_size(folder), verdict.verdict, verdict.camera_id, verdict.frame_id)


ENTRY_NAME = re.compile(r"[0-9a-f]{32}")  # what entry_key names a folder


def entry_key(camera_id: str, frame_id: str) -> str:
    return hashlib.sha256(f"{camera_id}\x00{frame_id}".encode()).hexdigest()[:32]


class FrameArchive:
    def __init__(self, root: Path, max_bytes: int, ok_sample_every: int = 0) -> None:
        if max_bytes <= 0:
            raise ValueError("archive max_bytes must be positive")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"archive.dir {self.root} is a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NotADirectoryError(f"archive.dir {self.root}: cannot make the folder ({exc.strerror})") from None
        self.max_bytes = max_bytes
        self.ok_sample_every = ok_sample_every
        self.failures = 0  # writes that failed, and frames the writer had no room for
        self.failing = False  # the last write failed: the alarm is up
        self.skipped = 0  # frames not kept because the writer was full
        self.unreadable = 0  # loads of a damaged entry (a panel polling one asks again and again)
        self._ok_seen = 0
        self._lock = threading.Lock()
        self._counting = threading.Lock()  # failures/skips come from the writer and from inference threads
        # oldest first; rebuilt from disk so a restart keeps the ring
        # only the ring's own folders (named by entry_key): never lost+found or another tool's, which are not ours
        # to list or evict
        entries = sorted((p for p in self.root.iterdir() if ENTRY_NAME.fullmatch(p.name) and p.is_dir()),
                         key=lambda p: p.stat().st_mtime)
        self._entries: list[_Entry] = [_indexed(p) for p in entries]
        self._bytes = sum(e.size for e in self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, verdict: Verdict) -> bool:
        if verdict.verdict == "NG":
            return True
        if verdict.verdict == "OK" and self.ok_sample_every > 0:
            with self._counting:
                self._ok_seen += 1
                return (self._ok_seen - 1) % self.ok_sample_every == 0  # the first, then every n-th
        return False

    def skip(self, verdict: Verdict, why: str) -> None:
        """A frame that should have been kept but was not taken (the writer was full): counted as a failure,
        logged on the 1st, 2nd, 4th, ... time so that a flood cannot fill the log."""
        with self._counting:
            self.failures += 1
            self.skipped += 1
            skipped = self.skipped
        if _worth_logging(skipped):
            log.warning("archive %s: frame %s/%s not kept: %s (%d so far)", self.root, verdict.camera_id,
                        verdict.frame_id, why, skipped)

    def _unreadable(self, camera_id: str, frame_id: str, why: object) -> None:
        """A damaged entry was asked for: logged on the 1st, 2nd, 4th, ... time, like ``skip``."""
        with self._counting:
            self.unreadable += 1
            count = self.unreadable
        if _worth_logging(count):
            log.warning("archive %s: entry of %s/%s unreadable (%s; %d unreadable loads so far)", self.root,
                        camera_id, frame_id, why, count)

    def store(self, verdict: Verdict, anomaly_map: np.ndarray, image_rgb: np.ndarray) -> Path | None:
        folder = self.root / entry_key(verdict.camera_id, verdict.frame_id)
        try:
            folder.mkdir(exist_ok=True)
            # stored again (a camera that restarted its counter): not there until the new verdict.json lands,
            # rather than the old verdict beside the new image
            (folder / "verdict.json").unlink(missing_ok=True)
            ok, png = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise OSError("PNG encoding failed")
            saved_map = io.BytesIO()
            np.save(saved_map, anomaly_map.astype(np.float16), allow_pickle=False)
            # each file whole or not at all (a reader of a frame stored again sees the old or the new one),
            # verdict.json last: an entry is listed only once its image and map are there
            _replace(folder / "image.png", png.tobytes())
            _replace(folder / "map.npy", saved_map.getvalue())
            _replace(folder / "verdict.json", verdict.model_dump_json().encode())
        except OSError as exc:  # disk full, read-only, ...: verdicts go on, the alarm goes up
            with self._counting:
                self.failures += 1
            if not self.failing:
                log.error("ALARM archive %s: writes fail (%s); verdicts continue, frames are not being kept",
                          self.root, exc)
            else:
                log.debug("archive write failed for frame %s: %s", verdict.frame_id, exc)
            self.failing = True
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:  # an entry stored before under these ids went with the folder
                self._forget(folder)
            return None
        if self.failing:
            self.failing = False
            log.warning("archive %s: writes work again (%d failed in all)", self.root, self.failures)
        with self._lock:
            self._forget(folder)
            entry = _Entry(folder, _folder_size(folder), verdict.verdict, verdict.camera_id, verdict.frame_id)
            self._entries.append(entry)
            self._bytes += entry.size
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                oldest = self._entries.pop(0)
                shutil.rmtree(oldest.folder, ignore_errors=True)
                self._bytes -= oldest.size
        return folder

    def _forget(self, folder: Path) -> None:
        """Drop a folder's entry from the index (with ``_lock`` held)."""
        self._entries = [e for e in self._entries if e.folder != folder]
        self._bytes = sum(e.size for e in self._entries)

    def load(self, camera_id: str, frame_id: str) -> ArchivedFrame | None:
        """The archived frame, or None where there is none whole: never stored, evicted (perhaps while being
        read) or damaged on disk."""
        folder = self.root / entry_key(camera_id, frame_id)
        try:
            verdict = Verdict.model_validate_json((folder / "verdict.json").read_bytes())
            image = cv2.imread(str(folder / "image.png"), cv2.IMREAD_COLOR)
            anomaly_map = np.load(folder / "map.npy", allow_pickle=False).astype(np.float32)
        except (OSError, ValueError, EOFError) as exc:  # ValueError, EOFError: pydantic's and numpy's "torn"
            if (folder / "verdict.json").exists():
                self._unreadable(camera_id, frame_id, exc)
            return None
        if image is None:
            self._unreadable(camera_id, frame_id, "image.png is not an image")
            return None
        return ArchivedFrame(verdict=verdict, image_rgb=cv2.cvtColor(image, cv2.COLOR_BGR2RGB), anomaly_map=anomaly_map)

    def recent(self, limit: int = 24, verdict: str | None = "NG") -> list[tuple[Verdict, float]]:
        """The newest archived verdicts first, each with when it was stored (Unix seconds); only those
        of one class unless ``verdict`` is None. Chosen from the index: only the listed ones are read."""
        with self._lock:
            entries = [e for e in reversed(self._entries) if e.verdict and (verdict is None or e.verdict == verdict)]
        found: list[tuple[Verdict, float]] = []
        for entry in entries:
            if len(found) >= limit:
                break
            try:
                path = entry.folder / "verdict.json"
                found.append((Verdict.model_validate_json(path.read_bytes()), path.stat().st_mtime))
            except (OSError, ValueError):  # evicted meanwhile, or damaged: skip it
                continue
        return found

    def find(self, frame_id: str) -> ArchivedFrame | None:
        """Look a frame up by frame_id alone (newest first), as technicians know it; from the index."""
        with self._lock:
            cameras = [e.camera_id for e in reversed(self._entries) if e.verdict and e.frame_id == frame_id]
        for camera_id in cameras:
            if (frame := self.load(camera_id, frame_id)) is not None:
                return frame
        return None


def _worth_logging(count: int) -> bool:
    """The 1st, 2nd, 4th, 8th, ... of a repeated event: a flood cannot fill the log, and its size still shows."""
    return count & (count - 1) == 0


def temporary_path(path: Path) -> Path:
    """Where a file of an entry is written before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp")


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename."""
    tmp = temporary_path(path)
    tmp.write_bytes(data)
    tmp.replace(path)


Stored = Callable[[Path | None], None]  # called after a write: its folder, None when it failed


@dataclass
class _Write:
    verdict: Verdict
    anomaly_map: np.ndarray
    image_rgb: np.ndarray
    then: Stored


class ArchiveWriter:
    """Stores frames in a :class:`FrameArchive` on a thread of its own, in the order given, at most
    ``capacity`` waiting; ``then`` runs on that thread after each write."""

    def __init__(self, archive: FrameArchive, capacity: int = 32) -> None:
        if capacity < 1:
            raise ValueError("an archive writer needs room for at least one frame")
        self.archive = archive
        self.capacity = capacity
        self._cond = threading.Condition()
        self._waiting: deque[_Write] = deque()
        self._busy = False  # a write is in progress
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)

    def start(self) -> ArchiveWriter:
        with self._cond:
            if self._thread.ident is None and not self._closed:
                self._thread.start()
        return self

    @property
    def pending(self) -> int:
        """Frames waiting or being written."""
        with self._cond:
            return len(self._waiting) + self._busy

    def submit(self, verdict: Verdict, anomaly_map: np.ndarray, image_rgb: np.ndarray, then: Stored) -> bool:
        """Queue a frame to keep; ``then(folder)`` runs once it is written (or failed). False when the writer is
        full or closed: the frame is not kept, counted as an archive failure, and ``then`` never runs."""
        with self._cond:
            room = not self._closed and len(self._waiting) < self.capacity
            if room:
                self._waiting.append(_Write(verdict, anomaly_map, image_rgb, then))
                self._cond.notify_all()
        if not room:
            self.archive.skip(verdict, f"the archive writer is {'closed' if self._closed else 'full'} "
                                       f"({self.capacity} frames waiting)")
        return room

    def close(self, timeout_s: float = 1.0) -> int:
        """Write what is queued (at most ``timeout_s``), then stop; how many frames were left unwritten (each
        counted as an archive failure, its ``then`` never run)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            if self._thread.is_alive():
                self._cond.wait_for(lambda: not self._waiting and not self._busy, timeout=timeout_s)
            left = list(self._waiting)
            self._waiting.clear()
        for job in left:
            self.archive.skip(job.verdict, "not written before the service stopped")
        if self._thread.ident is not None:  # started
            self._thread.join(0.1 if left else 1.0)
        return len(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._closed)
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self._busy = True
            try:
                try:
                    folder = self.archive.store(job.verdict, job.anomaly_map, job.image_rgb)
                except Exception as exc:  # store() counts disk errors itself; anything else: here
                    log.exception("archiving frame %s/%s failed", job.verdict.camera_id, job.verdict.frame_id)
                    self.archive.skip(job.verdict, f"the write failed: {exc!r}")
                    folder = None
                try:
                    job.then(folder)
                except Exception:  # a bug in the caller's hand-off must not stop the writer
                    log.exception("after archiving frame %s/%s", job.verdict.camera_id, job.verdict.frame_id)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _folder_size(folder: Path) -> int:
    try:
        return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    except OSError:  # evicted or unreadable meanwhile: it holds nothing the ring can count
        return 0
