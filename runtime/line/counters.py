"""What the line service counts: this boot's counters, and the lifetime totals kept in the state file.

Usage::

    counters = LineCounters()
    counters.frames_in += 1                       # the loop thread: a message read
    route = counters.count(verdict, reply=envelope is not None)   # "publish", "dropped" or "denied"
    verdict_seq = counters.next_seq()             # numbers every published verdict from 1, no gaps
    counters.this_boot(archive_failures)          # Totals of this boot (what a heartbeat adds up)

    state = LineStateKeeper(config.state_file, "press3", boot_id)   # LineStateError: another line's file
    state.lifetime(counters.this_boot(0))         # earlier boots + this one (None without a state file)
    state.save(counters.this_boot(0), last_seq=counters.seq, clean_stop=True)

Owns the counters the heartbeat, ``/metrics`` and the state file report (README, Reliability): the serving
loop writes them; ``snapshot`` may be read from any thread. A restart is a new boot: seq starts over at 1,
and the lifetime totals continue from the state file (lineguard.runtime.line.state), saved with every
heartbeat and once more, durably, after the final drain; a failing save is logged once, not every beat.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Literal

from lineguard.runtime.contract import BootRecord, ErrorCode, Totals, Verdict
from lineguard.runtime.line.state import LineState, LineStateFile

log = logging.getLogger(__name__)

Route = Literal["publish", "dropped", "denied"]


class LineCounters:
    def __init__(self) -> None:
        self.seq = 0  # the last published verdict's seq
        self.heartbeat_seq = 0
        self.frames_in = 0
        self.replies_out = 0
        self.dropped = 0
        self.camera_denied = 0  # frames whose key may not speak for their camera (CAMERA_NOT_ALLOWED)
        self.errors: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self._lock = threading.Lock()  # the loop adds keys; snapshot() may copy from another thread

    def count(self, verdict: Verdict, reply: bool) -> Route:
        """Count a verdict about to leave the service and say where it may go: ``denied`` (CAMERA_NOT_ALLOWED:
        never on the camera's topic, only the reply), ``dropped`` (no camera to publish it under and no one to
        reply to) or ``publish``."""
        denied = verdict.error is not None and verdict.error.code == ErrorCode.CAMERA_NOT_ALLOWED.value
        with self._lock:
            if verdict.error is not None:
                self.errors[verdict.error.code] += 1
            if denied:
                self.camera_denied += 1
                return "denied"
            if not verdict.camera_id and not reply:
                self.dropped += 1
                return "dropped"
            self.verdicts[verdict.verdict] += 1
            return "publish"

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of the verdicts by class and the errors by code (safe from any thread)."""
        with self._lock:
            return dict(self.verdicts), dict(self.errors)

    def this_boot(self, archive_failures: int) -> Totals:
        verdicts, errors = self.snapshot()
        return Totals(boots=1, frames_in=self.frames_in, verdicts_out=self.seq, replies_out=self.replies_out,
                      dropped=self.dropped, archive_failures=archive_failures, verdicts=verdicts, errors=errors)


class LineStateKeeper:
    """The state file of one line: the earlier boots' totals and record, and this boot's saves."""

    def __init__(self, path: str | os.PathLike[str] | None, line: str, boot_id: str) -> None:
        """Loads the file (raises LineStateError when it belongs to another line); no ``path``: nothing kept."""
        self.file = LineStateFile(path, line) if path is not None else None
        self.line = line
        self.boot_id = boot_id
        self.started_ns = time.time_ns()
        self.before = self.file.load() if self.file is not None else LineState(line=line)
        self._failing = False

    def lifetime(self, this_boot: Totals) -> Totals | None:
        """Every boot's totals, this one's included; None when no state file is kept."""
        return self.before.totals.plus(this_boot) if self.file is not None else None

    def save(self, this_boot: Totals, last_seq: int, clean_stop: bool = False) -> None:
        """Lifetime totals and this boot's record to the file (loop thread); a failure is logged once."""
        if self.file is None:
            return
        boot = BootRecord(boot_id=self.boot_id, started_ns=self.started_ns, last_verdict_seq=last_seq,
                          clean_stop=clean_stop)
        try:
            self.file.save(LineState(line=self.line, totals=self.before.totals.plus(this_boot), last_boot=boot),
                           durable=clean_stop)  # periodic saves skip fsync: this is the loop thread
        except OSError as exc:
            if not self._failing:
                log.error("line %s: cannot write state file %s (%s); lifetime counters are not being kept",
                          self.line, self.file.path, exc)
            self._failing = True
        else:
            self._failing = False
