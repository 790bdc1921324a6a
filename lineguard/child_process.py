"""Stopping a child process the way a supervisor does: SIGTERM, a grace period, then SIGKILL.

Usage::

    proc = subprocess.Popen([...])
    stop_process(proc)            # returns once it has exited; its exit code is proc.returncode
"""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, grace_s: float = 30.0) -> int | None:
    """Ask ``proc`` to stop (SIGTERM), wait ``grace_s``, then kill it; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode
