"""``lineguard bench all --quick``: one run writes report.json, report.md and valid PNGs of finite numbers.

No timing assertions: the numbers are whatever this machine measured; what is checked is that the
report is complete, self-consistent, and that every figure it names exists and is a real image.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest

from lineguard.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


@pytest.mark.slow
def test_bench_all_quick_writes_a_complete_report(bundle_dir: Path, tmp_path: Path) -> None:
    from lineguard.bench.report import QUICK, BenchReport

    out = tmp_path / "bench"
    assert main(["bench", "all", "--bundle", str(bundle_dir), "--out", str(out), "--quick"]) == 0
    report = BenchReport.model_validate_json((out / "report.json").read_text())
    dumped = report.model_dump()
    assert all(math.isfinite(n) for n in numbers(dumped)), "a NaN or infinity in the report"

    assert [r.batch_size for r in report.vision.runs] == list(QUICK.vision_batches)
    assert {(r.mode, r.max_batch) for r in report.line.runs} == {(m, b) for m in ("direct", "zeromq")
                                                                 for b in QUICK.line_batches}
    assert [t.max_batch for t in report.transport] == list(QUICK.line_batches)
    assert len(report.load) == len(QUICK.load_fractions)
    assert all(r.verdicts == r.frames_sent > 0 for r in report.load)  # open loop, still one verdict each
    assert report.load[0].offered_fps < report.load[-1].offered_fps
    assert [(r.scenario, r.deadline_aware, r.frames) for r in report.overload] == [
        ("burst", True, QUICK.overload_burst), ("burst", False, QUICK.overload_burst)]
    assert all(r.exactly_one_verdict and r.ideal_judged > 0 for r in report.overload)
    soak = report.soak
    assert soak.missing == soak.duplicates == 0 and soak.verdicts_received == soak.frames_addressable > 0
    assert soak.dropped_counted == soak.frames_unaddressable and len(soak.rss) >= 3
    # the test bundle has no LLM: those sections say so instead of showing numbers
    assert report.llm is None and report.explanations is None
    # a real tritonserver where `make triton` unpacked one (make test does): the Triton row, else it says why not
    assert set(report.not_measured) == {"llm", "explanations"} | ({"triton"} if report.triton is None else set())
    if report.triton is not None:
        t = report.triton
        assert t.rounds == QUICK.line_rounds and t.triton_fps.median > 0 and t.in_process_fps.median > 0
        assert "## Central Triton" in (out / "report.md").read_text()

    assert set(report.figures) == {"vision", "batch", "transport", "load", "soak"}
    markdown = (out / "report.md").read_text()
    assert "## Bursts and overload" in markdown
    for name, file in report.figures.items():
        png = out / file
        assert png.read_bytes()[:8] == PNG_MAGIC, name
        pixels = matplotlib.image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0, name
        assert f"]({file})" in markdown
    assert f"{report.vision.runs[0].speedup:.2f}x" in markdown
    # every comparison comes from interleaved rounds: each ratio carries its spread, and one whose
    # spread crosses 1.0 is labelled instead of reported as an effect
    assert report.line.rounds == QUICK.line_rounds and report.vision.rounds == QUICK.vision_rounds
    ratios = [*(t.zeromq_vs_direct_throughput for t in report.transport), report.line.microbatch_gain,
              *(r.speedup_spread for r in report.vision.runs), *(r.inspection_speedup_spread for r in report.vision.runs)]
    for ratio in ratios:
        assert ratio.rounds >= 2 and ratio.low <= ratio.median <= ratio.high
        assert (ratio.effect().startswith("no measurable difference")) == ratio.crosses(1.0)
    for t in report.transport:
        assert t.zeromq_vs_direct_throughput.effect() in markdown
    assert "min-max" in markdown
    assert "Not measured: llm" in markdown
