"""Soak: a sustained mixed stream from several cameras; exactly one verdict per frame, memory stays bounded.

``pytest tests/test_soak.py`` streams for 15 s (part of ``make test``); ``--soak-seconds 3600`` for an hour.
The numbers (verdict counts, p50/p99 latency, RSS samples, growth and slope) are written to
``soak.json`` in the test's tmp dir and printed. Latency is recorded, never asserted: speed is the
benchmarks' business (``lineguard bench all``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from line_helpers import LOOPBACK

from lineguard.runtime.inspector import Inspector
from lineguard.runtime.line_config import LineConfig
from lineguard.runtime.server import LineServer
from lineguard.runtime.soak import SoakPlan, memory_bound_mb, painted_defects, run_soak


def test_soak_mixed_stream(enrolled_dir: Path, weave_parts, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    seconds = request.config.getoption("--soak-seconds")
    config = LineConfig(line="soak", endpoints=LOOPBACK, products=["weave"], deadline_ms=5000,
                        heartbeat_interval_ms=500, batching={"max_batch": 4, "max_queue_delay_ms": 5})
    good = weave_parts[4:12]
    with LineServer(Inspector(enrolled_dir), config) as server:
        result = run_soak(server.endpoints.frames, server.endpoints.verdicts, good=good,
                          defects=painted_defects(weave_parts[12:16]), product="weave",
                          plan=SoakPlan(duration_s=seconds, cameras=3, fps=3.0))
        beat = server.heartbeat()
    report = tmp_path / "soak.json"
    report.write_text(result.model_dump_json(indent=1))
    print(f"\nsoak {seconds:.0f} s: {result.frames_sent} frames, {result.verdicts_received} verdicts, "
          f"p50 {result.latency_p50_ms:.0f} ms p99 {result.latency_p99_ms:.0f} ms, RSS {result.rss_start_mb:.0f} -> "
          f"{result.rss_end_mb:.0f} MB (slope {result.rss_slope_mb_per_min:+.2f} MB/min); {report}")

    # exactly one verdict per frame, every unaddressable one counted
    assert result.frames_addressable > 0 and result.frames_unaddressable > 0
    assert result.missing == 0 and result.duplicates == 0, result.model_dump(exclude={"rss"})
    assert result.verdicts_received == result.frames_addressable
    assert result.dropped_counted == result.frames_unaddressable
    assert beat.verdicts_out == beat.last_verdict_seq == result.verdicts_received
    # the stream really was mixed: inspected frames and each kind of refusal
    assert result.verdict_classes.get("OK", 0) + result.verdict_classes.get("NG", 0) > 0
    assert {"BAD_HEADER", "BAD_PAYLOAD", "BAD_SHAPE", "UNKNOWN_PRODUCT"} <= set(result.error_codes)
    # bounded memory: once warm, growth stays within what the bounded buffers can hold plus allocator slack
    bound = memory_bound_mb(config, frame_bytes=good[0].nbytes)
    assert result.rss_growth_mb < bound, (result.rss_growth_mb, bound)
    assert result.rss_peak_mb - result.rss_start_mb < bound
