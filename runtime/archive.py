"""Bounded on-disk ring of inspected frames: every NG frame and a sample of OK frames, with their maps.

For audit, the technician's panel and LLM explanations. Oldest entries are evicted when the ring
exceeds its byte cap; a failing disk never stops verdicts (``store`` returns None and counts it in
``failures``, which the service's heartbeat carries as ``archive_failures``). The alarm is logged once
when writes start failing (ERROR) and once when they work again, not once per frame.

Usage::

    archive = FrameArchive(Path("/var/lib/lineguard/archive"), max_bytes=2 << 30, ok_sample_every=100)
    archive.store(inspection.verdict, inspection.anomaly_map, inspection.model_rgb)
    frame = archive.load("cam0", "frame-000123")      # ArchivedFrame(verdict, image_rgb, anomaly_map)

Folder names are hashes of (camera_id, frame_id): ids from the wire never become paths.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.messages import Verdict

log = logging.getLogger(__name__)


@dataclass
class ArchivedFrame:
    verdict: Verdict
    image_rgb: np.ndarray
    anomaly_map: np.ndarray


def entry_key(camera_id: str, frame_id: str) -> str:
    return hashlib.sha256(f"{camera_id}\x00{frame_id}".encode()).hexdigest()[:32]


class FrameArchive:
    def __init__(self, root: Path, max_bytes: int, ok_sample_every: int = 0) -> None:
        if max_bytes <= 0:
            raise ValueError("archive max_bytes must be positive")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.ok_sample_every = ok_sample_every
        self.failures = 0
        self.failing = False  # the last write failed: the alarm is up
        self._ok_seen = 0
        self._lock = threading.Lock()
        # oldest first; rebuilt from disk so a restart keeps the ring
        entries = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        self._entries: list[tuple[Path, int]] = [(p, _folder_size(p)) for p in entries]
        self._bytes = sum(size for _, size in self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, verdict: Verdict) -> bool:
        if verdict.verdict == "NG":
            return True
        if verdict.verdict == "OK" and self.ok_sample_every > 0:
            self._ok_seen += 1
            return (self._ok_seen - 1) % self.ok_sample_every == 0  # the first, then every n-th
        return False

    def store(self, verdict: Verdict, anomaly_map: np.ndarray, image_rgb: np.ndarray) -> Path | None:
        folder = self.root / entry_key(verdict.camera_id, verdict.frame_id)
        try:
            folder.mkdir(exist_ok=True)
            ok, png = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise OSError("PNG encoding failed")
            (folder / "image.png").write_bytes(png.tobytes())
            np.save(folder / "map.npy", anomaly_map.astype(np.float16), allow_pickle=False)
            (folder / "verdict.json").write_text(verdict.model_dump_json())
        except OSError as exc:  # disk full, read-only, ...: verdicts go on, the alarm goes up
            self.failures += 1
            if not self.failing:
                log.error("ALARM archive %s: writes fail (%s); verdicts continue, frames are not being kept",
                          self.root, exc)
            else:
                log.debug("archive write failed for frame %s: %s", verdict.frame_id, exc)
            self.failing = True
            shutil.rmtree(folder, ignore_errors=True)
            return None
        if self.failing:
            self.failing = False
            log.warning("archive %s: writes work again (%d failed in all)", self.root, self.failures)
        with self._lock:
            self._entries = [(p, s) for p, s in self._entries if p != folder]
            size = _folder_size(folder)
            self._entries.append((folder, size))
            self._bytes = sum(s for _, s in self._entries)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                oldest, oldest_size = self._entries.pop(0)
                shutil.rmtree(oldest, ignore_errors=True)
                self._bytes -= oldest_size
        return folder

    def load(self, camera_id: str, frame_id: str) -> ArchivedFrame | None:
        folder = self.root / entry_key(camera_id, frame_id)
        if not (folder / "verdict.json").is_file():
            return None
        image = cv2.imread(str(folder / "image.png"), cv2.IMREAD_COLOR)
        return ArchivedFrame(
            verdict=Verdict.model_validate_json((folder / "verdict.json").read_text()),
            image_rgb=cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
            anomaly_map=np.load(folder / "map.npy", allow_pickle=False).astype(np.float32),
        )

    def recent(self, limit: int = 24, verdict: str | None = "NG") -> list[tuple[Verdict, float]]:
        """The newest archived verdicts first, each with when it was stored (Unix seconds); only those
        of one class unless ``verdict`` is None."""
        with self._lock:
            folders = [p for p, _ in reversed(self._entries)]
        found: list[tuple[Verdict, float]] = []
        for folder in folders:
            if len(found) >= limit:
                break
            try:
                path = folder / "verdict.json"
                archived = Verdict.model_validate_json(path.read_text())
                stored_at = path.stat().st_mtime
            except (OSError, ValueError):  # evicted meanwhile, or half-written: skip it
                continue
            if verdict is None or archived.verdict == verdict:
                found.append((archived, stored_at))
        return found

    def find(self, frame_id: str) -> ArchivedFrame | None:
        """Look a frame up by frame_id alone (newest first), as technicians know it."""
        with self._lock:
            folders = [p for p, _ in reversed(self._entries)]
        for folder in folders:
            try:
                verdict = Verdict.model_validate_json((folder / "verdict.json").read_text())
            except (OSError, ValueError):
                continue
            if verdict.frame_id == frame_id:
                return self.load(verdict.camera_id, frame_id)
        return None


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
