"""``lineguard bench all --out DIR``: every benchmark in one run, written as report.json, report.md and PNGs.

Usage::

    from lineguard.bench.report import FULL, QUICK, bench_all

    report = bench_all("bundles/default", "artifacts/bench", FULL)    # ~5-10 min on 2 cores
    report.vision.runs[0].speedup, report.load[-1].latency_p99_ms, report.soak.rss_growth_mb

What one run measures (each figure in the report comes from this run, on this machine). Every
comparison runs as interleaved rounds after a warm-up (lineguard.bench.rounds; 5 or more in
``FULL``, fewer in ``QUICK``, which proves the plumbing only): figures are medians with their min-max
over the rounds, ratios are taken per round, and a ratio whose range crosses 1.0 is reported as "no
measurable difference".


* the vision chain, ONNX Runtime against its PyTorch eager reference (``bench vision``);
* throughput and p50/p99 latency against batch size, in-process and over loopback ZeroMQ (``bench
  line``), and the transport's overhead (their ratio);
* throughput and latency against offered load: an open-loop camera at fractions of the capacity just
  measured, up to overload (TIMEOUT/OVERLOADED counted);
* the LLM's time to first token and tokens/s, and the verdict p99 with and without explanations
  streaming (when the bundle has an LLM; otherwise the report says why these are missing);
* RSS of a ``lineguard serve`` process over a soak with a mixed stream from three cameras.

It lives in ``lineguard`` (not ``runtime``) because it needs both halves: the PyTorch reference from
``export`` and the line service from ``runtime``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from lineguard.bench.burst import OverloadRun
from lineguard.bench.line import BENCH_PRODUCT, bench_frames, overload_runs
from lineguard.bench.line_rounds import LineRounds, line_rounds
from lineguard.bench.llm import LlmBench, bench_llm
from lineguard.bench.load import LoadRun, offered_load_run
from lineguard.bench.rounds import Spread
from lineguard.bench.triton import TritonComparison, triton_rounds
from lineguard.bench.triton_local import find_tritonserver
from lineguard.export.bench_vision import VisionBench, bench_vision
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.soak import SoakPlan, SoakResult, painted_defects, run_soak


@dataclass(frozen=True)
class BenchSettings:
    """How much of each benchmark to run. FULL is what ``make bench`` runs; QUICK proves the plumbing."""

    name: str = "full"
    vision_batches: tuple[int, ...] = (1, 8)
    vision_rounds: int = 7
    line_batches: tuple[int, ...] = (1, 2, 4, 8)
    line_frames: int = 48
    line_rounds: int = 5
    vision_int8: bool = True  # the INT8 encoder beside FP32 (quantisation takes about a minute)
    triton_batch: int = 4  # the Triton row's batch (where a tritonserver is unpacked: make triton)
    load_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)  # of the measured ZeroMQ capacity
    load_seconds: float = 10.0
    load_batch: int = 4
    load_deadline_ms: float = 1000.0
    soak_seconds: float = 60.0
    soak_load_fraction: float = 0.5
    llm_rounds: int = 3
    overload_burst: int = 60  # frames at once (deadline-aware and plain); 0: no overload scenarios
    overload_factors: tuple[float, ...] = (2.0, 5.0)  # sustained, x the measured capacity


FULL = BenchSettings()
QUICK = BenchSettings(name="quick", vision_batches=(1, 2), vision_rounds=2, line_batches=(1, 2), line_frames=8,
                      line_rounds=2, vision_int8=False, load_fractions=(0.5, 1.5), load_seconds=2.0, soak_seconds=4.0, llm_rounds=1,
                      overload_burst=6, overload_factors=())


class TransportOverhead(BaseModel):
    max_batch: int
    zeromq_vs_direct_throughput: Spread  # ZeroMQ frames/s over in-process frames/s, per round
    p50_added_ms: Spread  # ZeroMQ p50 latency minus in-process p50, per round


class ExplanationImpact(BaseModel):
    max_batch: int
    verdict_p99_without_ms: Spread
    verdict_p99_with_ms: Spread
    ratio: Spread  # per round: with / without


class BenchReport(BaseModel):
    schema_version: Literal[2] = 2
    created_utc: str
    machine: str
    cpus: int
    settings: str  # "full" | "quick"
    bundle_id: str
    wall_s: float
    vision: VisionBench
    line: LineRounds
    transport: list[TransportOverhead]
    load: list[LoadRun]
    triton: TritonComparison | None = None  # in-process vs a real tritonserver (bench_triton)
    overload: list[OverloadRun] = []  # bursts and sustained overload at the line defaults (bench_burst)
    llm: LlmBench | None
    explanations: ExplanationImpact | None
    soak: SoakResult  # RSS is that of a separate `lineguard serve` process
    not_measured: dict[str, str]  # section -> why it is missing from this run
    figures: dict[str, str]  # figure -> PNG file name beside report.json


def _machine() -> str:
    cpu = " ".join(x for x in (platform.machine(), platform.processor()) if x)
    return f"{cpu}, {os.cpu_count()} cpus, Python {platform.python_version()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(bundle: Path, product: str, workdir: Path, timeout_s: float = 120.0) -> Iterator[tuple[str, str, int]]:
    """A ``lineguard serve`` process on loopback ports; yields (frames, verdicts, pid), SIGTERM at the end."""
    frames, verdicts, inspect = (f"tcp://127.0.0.1:{_free_port()}" for _ in range(3))
    config = workdir / "soak-line.yaml"
    config.write_text(yaml.safe_dump({
        "line": "soak", "products": [product], "deadline_ms": 2000, "heartbeat_interval_ms": 500,
        "endpoints": {"frames": frames, "verdicts": verdicts, "inspect": inspect},
        "batching": {"max_batch": 4, "max_queue_delay_ms": 5}, "explanations": {"enabled": False},
        "http": {"port": 0},  # any free port: a station's own runtime may hold 8081
    }))
    log_path = workdir / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "lineguard.cli", "serve", str(bundle), "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield frames, verdicts, proc.pid
    except RuntimeError as exc:  # e.g. no heartbeat: say why the service did not come up
        log.flush()
        raise RuntimeError(f"{exc}\nlineguard serve output:\n{log_path.read_text()[-3000:]}") from exc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def bench_all(bundle_dir: str | os.PathLike[str], out: str | os.PathLike[str], settings: BenchSettings = FULL,
              progress: bool = True) -> BenchReport:
    """Run everything, write ``out/report.json``, ``out/report.md`` and the PNGs; return the report."""
    from lineguard.bench.markdown import report_markdown
    from lineguard.bench.plots import write_figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bundle_dir = Path(bundle_dir)
    has_llm = Bundle.open(bundle_dir).manifest.llm is not None
    not_measured: dict[str, str] = {}

    def say(what: str) -> None:
        if progress:
            print(f"[bench all {time.perf_counter() - started:6.0f} s] {what}", file=sys.stderr, flush=True)

    say(f"vision chain: ONNX Runtime vs PyTorch eager, batch {settings.vision_batches}, {settings.vision_rounds} rounds")
    vision = bench_vision(bundle_dir, batch_sizes=settings.vision_batches, rounds=settings.vision_rounds,
                          int8=settings.vision_int8)
    if not has_llm:
        not_measured["explanations"] = not_measured["llm"] = (
            f"bundle {bundle_dir} has no LLM: add one with `lineguard export llm {bundle_dir}`")

    images = bench_frames(settings.line_frames + 4)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-bench-all-") as bundle, \
            tempfile.TemporaryDirectory(prefix="lineguard-bench-all-") as scratch:
        inspector = Inspector(bundle)
        enroll_product(bundle, BENCH_PRODUCT, images[:4], chain=inspector.chain)
        test_frames = images[4:]
        inspector.analyze(test_frames[:2], BENCH_PRODUCT)  # warm-up
        say(f"line: in-process vs ZeroMQ, batch {settings.line_batches}, {settings.line_rounds} interleaved rounds"
            + (" (+ explanations)" if has_llm else ""))
        line = line_rounds(inspector, test_frames, settings.line_batches, rounds=settings.line_rounds,
                           explain_archive=Path(scratch) / "archive" if has_llm else None, progress=progress)
        by = {(r.mode, r.max_batch): r for r in line.runs}
        transport = [TransportOverhead(max_batch=b, zeromq_vs_direct_throughput=line.zeromq_vs_direct[str(b)],
                                       p50_added_ms=line.p50_added_ms[str(b)]) for b in settings.line_batches]
        explanations = None
        if line.p99_with_explanations_ratio is not None:
            with_llm = by["zeromq+explanations", min(settings.line_batches)]
            without = by["zeromq", with_llm.max_batch]
            explanations = ExplanationImpact(max_batch=with_llm.max_batch,
                                             verdict_p99_without_ms=without.latency_p99_ms,
                                             verdict_p99_with_ms=with_llm.latency_p99_ms,
                                             ratio=line.p99_with_explanations_ratio)
        capacity = max(r.frames_per_s.median for r in line.runs if r.mode == "zeromq")
        load = []
        for fraction in settings.load_fractions:
            rate = fraction * capacity
            say(f"offered load {rate:.1f} frames/s ({fraction:.0%} of the measured capacity) for {settings.load_seconds:.0f} s")
            load.append(offered_load_run(inspector, test_frames, BENCH_PRODUCT, rate, settings.load_seconds,
                                         max_batch=settings.load_batch, deadline_ms=settings.load_deadline_ms))
        say(f"overload: {settings.overload_burst} frames at once, deadline-aware and plain; sustained at "
            f"{', '.join(f'{f:g}x' for f in settings.overload_factors) or 'no'} capacity")
        overload = overload_runs(inspector, test_frames, settings.overload_burst, settings.overload_factors,
                                 plain_too=True)
        triton = None
        server = find_tritonserver()
        if server is None:
            not_measured["triton"] = "no tritonserver unpacked here (make triton, or LINEGUARD_TRITONSERVER=DIR)"
        else:
            say(f"Triton: the same frames in-process and through a real tritonserver, batch {settings.triton_batch}, "
                f"{settings.line_rounds} interleaved rounds")
            triton = triton_rounds(bundle, inspector, test_frames, server, Path(scratch), batch=settings.triton_batch,
                                   rounds=settings.line_rounds)
        del inspector  # its ONNX Runtime sessions: the soak's service runs in a process of its own
        cameras = 3
        plan = SoakPlan(duration_s=settings.soak_seconds, cameras=cameras,
                        fps=settings.soak_load_fraction * capacity / cameras, drain_timeout_s=60,
                        connect_timeout_s=180)
        say(f"soak: `lineguard serve` process, {cameras} cameras x {plan.fps:.1f} frames/s mixed, {plan.duration_s:.0f} s")
        with serve_process(bundle.root, BENCH_PRODUCT, Path(scratch)) as (frames_ep, verdicts_ep, pid):
            soak = run_soak(frames_ep, verdicts_ep, good=test_frames, defects=painted_defects(test_frames[:4]),
                            product=BENCH_PRODUCT, plan=plan, pid=pid)
    llm = None
    if has_llm:
        say("LLM: time to first token and tokens/s")
        llm = bench_llm(bundle_dir, rounds=settings.llm_rounds)
    report = BenchReport(
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=_machine(), cpus=os.cpu_count() or 1, settings=settings.name,
        bundle_id=vision.bundle_id, wall_s=0.0, vision=vision, line=line, transport=transport,
        load=load, triton=triton, overload=overload, llm=llm, explanations=explanations, soak=soak,
        not_measured=not_measured, figures={},
    )
    say("plots and report")
    report.figures = write_figures(report, out)
    report.wall_s = time.perf_counter() - started
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    say(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return report
