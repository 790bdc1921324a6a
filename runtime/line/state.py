"""Counters that outlive one run of the line service: a small JSON state file, replaced atomically.

Usage::

    from lineguard.runtime.line.state import BootRecord, LineStateFile

    store = LineStateFile("/var/lib/lineguard/press3.state.json", line="press3")
    before = store.load()                 # LineState of the earlier boots (a fresh one if there is none)
    before.totals.verdicts_out, before.last_boot   # lifetime totals; the boot that wrote the file last
    store.save(before.model_copy(update={"last_boot": BootRecord(boot_id="4f1c...", started_ns=0)}))

What continues across a restart and what starts over (README, section Reliability):

* ``boot_id`` is new on every start and ``seq`` starts again at 1: a subscriber tells a restart from
  lost verdicts by the heartbeat's ``boot_id``, never by the seq alone;
* lifetime totals (frames, verdicts by class, errors by code, drops, archive failures, boots) continue:
  the service writes them with every heartbeat and once more after its final drain, so a crash loses
  at most one heartbeat interval of counts;
* the record of the previous boot (its ``boot_id`` and last published ``seq``, and whether it stopped
  cleanly) is announced in the next boot's heartbeats (``previous_boot``), so a subscriber that followed
  the old boot learns how many of its last verdicts it missed.

``save`` writes a temporary file in the same folder, fsyncs it and renames it over the old one
(``os.replace`` is atomic on POSIX): a reader or a crash sees the old file or the new one, never half
of one. A file that cannot be read is set aside (``*.corrupt``) and counting starts over; a file of
another line is refused with :class:`LineStateError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineguard.runtime.contract import BootRecord, Totals

log = logging.getLogger(__name__)


class LineStateError(RuntimeError):
    """The state file belongs to another line (two services must not share one)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineState(_Record):
    schema_version: Literal[1] = 1
    line: str
    saved_ns: int = 0
    totals: Totals = Field(default_factory=Totals)
    last_boot: BootRecord | None = None


class LineStateFile:
    """Load and atomically replace one line's state file."""

    def __init__(self, path: str | os.PathLike[str], line: str) -> None:
        """LineStateError for a path no file can be saved at (a folder, or under a file): a config mistake
        that start-up reports, rather than counts the service would silently not keep."""
        self.path = Path(path)
        self.line = line
        if self.path.is_dir():
            raise LineStateError(f"state_file {self.path} is a folder: name a file, e.g. {self.path / f'{line}.state.json'}")
        blocking = next((p for p in self.path.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise LineStateError(f"state_file {self.path}: {blocking} is a file, not a folder")

    def load(self) -> LineState:
        """The saved state; a fresh one when there is no file or it cannot be read (that one is set aside)."""
        try:
            text = self.path.read_bytes()  # bytes: pydantic reports bad UTF-8 as a ValidationError
        except FileNotFoundError:
            return LineState(line=self.line)
        except OSError as exc:
            log.error("line state %s cannot be read (%s): counting starts over", self.path, exc)
            return LineState(line=self.line)
        try:
            state = LineState.model_validate_json(text)
        except ValidationError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            log.error("line state %s is not a LineState (%s): set aside as %s, counting starts over",
                      self.path, exc.errors()[0]["msg"], aside.name)
            return LineState(line=self.line)
        if state.line != self.line:
            raise LineStateError(f"state file {self.path} belongs to line {state.line!r}, not {self.line!r}: "
                                 "give every line its own state_file")
        return state

    def save(self, state: LineState, durable: bool = True) -> None:
        """Write ``state`` atomically (temporary file, rename). Raises OSError (disk full, ...).

        ``durable``: fsync the file and its folder too, so the rename survives a power cut. The periodic
        saves from the serving loop pass False (an fsync on eMMC can take 100 ms and would hold verdicts
        back): a crash then loses at most the counts since the last durable save, and a torn file is
        set aside at the next start; the final save after the drain is durable."""
        state = state.model_copy(update={"saved_ns": time.time_ns()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(state.model_dump_json(indent=1))
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if not durable:
            return
        with contextlib.suppress(OSError):  # make the rename itself durable (POSIX: fsync the folder)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
