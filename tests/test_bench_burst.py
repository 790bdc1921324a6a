"""A burst into a real line (real bundle, real ONNX Runtime, real sockets): one verdict per frame, and the
line judges again right after. Timing-free: the deadline is generous, so no assertion depends on how fast
this machine is (judged vs ideal on this machine is ``lineguard bench line``'s job, not a test's)."""

from __future__ import annotations

from pathlib import Path

from lineguard.bench.burst import burst_run, describe, measure_capacity
from lineguard.bench.line import BENCH_PRODUCT, bench_frames
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.line.batch_latency import warm_up_sizes
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector


def test_a_burst_into_a_real_line_gets_one_verdict_per_frame_and_the_line_recovers(bundle_copy: Path) -> None:
    images = bench_frames(12)
    bundle = Bundle.open(bundle_copy)
    inspector = Inspector(bundle)
    enroll_product(bundle, BENCH_PRODUCT, images[:4], chain=inspector.chain)
    frames = images[4:]
    capacity = measure_capacity(inspector, frames, BENCH_PRODUCT, rounds=1)
    run = burst_run(inspector, frames, BENCH_PRODUCT, capacity, count=20, deadline_ms=2000, after_s=1.0)
    print(describe(run))
    assert run.exactly_one_verdict
    assert run.judged + run.timeouts == 20 and run.overloaded == run.other_errors == 0
    assert run.judged >= 1 and run.after_judged >= 1
    assert set(warm_up_sizes(8)) <= {int(size) for size in run.planned_batch_ms}  # the warm-up timed them
