"""ONNX Runtime's CPU threading for one deployment, chosen from what shares the cores, with its reason.

Usage::

    from lineguard.runtime.inference.ort_threading import OrtThreading, choose_threading
    threading = choose_threading(cores=[0, 1], llm_threads=1, workers=1)
    threading.intra_op_threads, threading.allow_spinning     # 1, False
    threading.summary()    # "1 intra-op thread, spinning off: the explanation LLM (1 thread) shares ..."
    OnnxRuntimeBackend("encoder.onnx", threads=threading)

Measured on the bundle's own graphs (issue 17): ONNX Runtime with 2 intra-op threads and its default
spin-waiting ran about 3x slower (55 vs 17 ms at batch 1) while other processes used the same cores,
as the explanation LLM does when it streams; with spinning off, or one thread, it was fastest. So
spinning is off unless a line config turns it on, and the thread count leaves the LLM its threads.
``cores`` pins the intra-op pool's threads (ONNX Runtime's ``session.intra_op_thread_affinities``,
one core each; the calling worker thread itself is not pinned by ONNX Runtime).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class OrtThreading:
    intra_op_threads: int
    allow_spinning: bool = False
    cores: tuple[int, ...] = ()  # Linux CPU numbers the intra-op threads are pinned to; empty: not pinned
    reason: str = ""

    @property
    def affinities(self) -> str | None:
        """``session.intra_op_thread_affinities``: one group per pool thread (intra_op_threads - 1; the
        calling thread is ONNX Runtime's first), logical processor ids counted from 1."""
        if not self.cores or self.intra_op_threads < 2:
            return None
        pool = [self.cores[i % len(self.cores)] for i in range(1, self.intra_op_threads)]
        return ";".join(str(core + 1) for core in pool)

    def summary(self) -> str:
        threads = f"{self.intra_op_threads} intra-op thread{'s' if self.intra_op_threads != 1 else ''}"
        pinned = f" on cores {list(self.cores)}" if self.cores else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{threads}{pinned}, spinning {'on' if self.allow_spinning else 'off'}{why}"


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def choose_threading(cores: Sequence[int], llm_threads: int = 0, workers: int = 1, intra_op_threads: int | None = None,
                     allow_spinning: bool | None = None, pin: bool = False) -> OrtThreading:
    """Threads and spinning for ONNX Runtime sessions sharing ``cores`` with an LLM of ``llm_threads``
    threads and ``workers`` inference workers; explicit values (a line config's) win and say so."""
    sharing = []
    if llm_threads:
        sharing.append(f"the explanation LLM ({llm_threads} thread{'s' if llm_threads != 1 else ''})")
    if workers > 1:
        sharing.append(f"{workers} inference workers")
    reasons = []
    if intra_op_threads is None:
        intra_op_threads = max(1, len(cores) - llm_threads)
        reasons.append(f"{len(cores)} core{'s' if len(cores) != 1 else ''}"
                       + (f" less {llm_threads} for the LLM" if llm_threads else ""))
    else:
        reasons.append("threads from the line config")
    if allow_spinning is None:
        allow_spinning = False
        shared = " and ".join(sharing) if sharing else "few-shot scoring (numpy) right after each run"
        reasons.append(f"spinning off because {shared} share{'s' if len(sharing) < 2 else ''} these cores")
    else:
        reasons.append(f"spinning {'on' if allow_spinning else 'off'} from the line config")
    return OrtThreading(intra_op_threads=intra_op_threads, allow_spinning=allow_spinning,
                        cores=tuple(cores) if pin else (), reason="; ".join(reasons))
