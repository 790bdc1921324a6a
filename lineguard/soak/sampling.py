"""The service process's memory and open files, sampled while the soak runs (psutil).

Usage::

    process = service_process(pid)             # psutil.Process; this process when pid is None
    sample(process, t_s=12.5)                  # RssSample(t_s=12.5, rss_mb=..., open_files=...)
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

MIB = 1024 * 1024


class RssSample(BaseModel):
    t_s: float
    rss_mb: float
    open_files: int | None = None  # file descriptors (sockets, pipes, files) of the process; None: not on Linux


def service_process(pid: int | None = None) -> Any:
    """The process to watch (``pid``, default this one) as a ``psutil.Process``."""
    try:
        import psutil
    except ImportError as exc:  # a bench/test tool: the edge runtime itself does not need psutil
        raise RuntimeError("the soak measures memory with psutil: pip install 'lineguard[dev]'") from exc
    return psutil.Process(pid or os.getpid())


def sample(process: Any, t_s: float) -> RssSample:
    """RSS (MiB) and open file descriptors of ``process`` now, stamped ``t_s`` seconds into the stream."""
    try:
        files = int(process.num_fds())
    except (AttributeError, OSError):  # not on Linux/Unix
        files = None
    return RssSample(t_s=t_s, rss_mb=process.memory_info().rss / MIB, open_files=files)
