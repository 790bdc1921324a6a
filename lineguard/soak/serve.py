"""``lineguard bench soak``: a ``lineguard serve`` process on loopback, driven by the soak.

Usage::

    result = soak_serve_process("bundles/default", SoakPlan(duration_s=600))
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from lineguard.child_process import stop_process
from lineguard.soak.plan import SoakPlan
from lineguard.soak.report import SoakResult
from lineguard.soak.run import run_soak
from lineguard.soak.traffic import painted_defects


def _loopback_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def soak_serve_process(bundle_dir: str | os.PathLike[str], plan: SoakPlan, explanations: bool = True,
                       progress: bool = True) -> SoakResult:
    """A ``lineguard serve`` process on loopback (a scratch copy of the bundle, a product enrolled from
    generated frames) driven by the mixed stream, with explanation requests when the bundle has an LLM and
    ``explanations``. RSS and open files are the service process's alone."""
    import yaml

    from lineguard.bench.line import BENCH_PRODUCT, bench_frames
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.scoring.enroll import enroll_product

    images = bench_frames(12)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-bench-soak-") as bundle, \
            tempfile.TemporaryDirectory(prefix="lineguard-bench-soak-") as scratch:
        enroll_product(bundle, BENCH_PRODUCT, images[:4])
        ask = explanations and bundle.manifest.llm is not None
        endpoints = {name: _loopback_endpoint() for name in ("frames", "verdicts", "inspect", "explanations")}
        config = Path(scratch) / "line.yaml"
        config.write_text(yaml.safe_dump({
            "line": "soak", "products": [BENCH_PRODUCT], "deadline_ms": 2000, "heartbeat_interval_ms": 500,
            "endpoints": endpoints, "batching": {"max_batch": 4, "max_queue_delay_ms": 5},
            "archive": {"dir": str(Path(scratch) / "archive"), "max_bytes": 256 << 20},
            "explanations": {"enabled": ask, "max_tokens": 16, "max_pending": 2}, "http": {"enabled": False},
        }))
        log_path = Path(scratch) / "serve.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "lineguard.cli", "serve", str(bundle.root), "--config",
                                     str(config)], stdout=log, stderr=subprocess.STDOUT)
            try:
                if progress:
                    print(f"soak: `lineguard serve` (pid {proc.pid}), {plan.cameras} cameras x {plan.fps:.1f} "
                          f"frames/s mixed{' + explanation requests' if ask else ''}, {plan.duration_s:.0f} s",
                          file=sys.stderr, flush=True)
                return run_soak(endpoints["frames"], endpoints["verdicts"], good=images[4:],
                                defects=painted_defects(images[4:8]), product=BENCH_PRODUCT, plan=plan, pid=proc.pid,
                                explanations=endpoints["explanations"] if ask else None)
            except RuntimeError as exc:  # e.g. no heartbeat: say why the service did not come up
                log.flush()
                raise RuntimeError(f"{exc}\nlineguard serve output:\n{log_path.read_text()[-3000:]}") from exc
            finally:
                stop_process(proc)
