"""report.md of ``lineguard bench all``: headline numbers, one table per benchmark, the figures embedded.

Usage::

    from lineguard.bench.markdown import report_markdown

    Path("artifacts/bench/report.md").write_text(report_markdown(report))

Every number is read from the report (measured in that run); nothing here is hard-coded. Figures
are medians over interleaved rounds with their min-max in brackets; a ratio whose min-max crosses 1.0
is written "no measurable difference".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lineguard.bench.line_rounds import LineRoundsRun
    from lineguard.bench.report import BenchReport
    from lineguard.bench.rounds import Spread


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _s(spread: Spread, digits: int = 1) -> str:
    return spread.text(digits)


def _figure(report: BenchReport, name: str, caption: str) -> list[str]:
    return [f"![{caption}]({report.figures[name]})", ""] if name in report.figures else []


def _overload(report: BenchReport) -> list[str]:
    if not report.overload:
        return []
    rows = [[r.scenario if r.offered_fps is None else f"{r.offered_fps / r.capacity_before_fps:.0f}x sustained",
             "deadline-aware" if r.deadline_aware else "plain", str(r.frames),
             f"{r.judged} / {r.ideal_judged:.1f} ({r.judged_vs_ideal:.0%})", f"{r.achievable_judged:.1f}",
             str(r.timeouts), str(r.overloaded), "yes" if r.exactly_one_verdict else "NO",
             "yes" if r.first_after_judged else "no",
             f"{r.recovery_s * 1e3:.0f}" if r.recovery_s is not None else "-"] for r in report.overload]
    first = report.overload[0]
    return [
        "## Bursts and overload",
        "",
        f"A line at its defaults (max_batch {first.max_batch}, deadline {first.deadline_ms:.0f} ms, capacity measured "
        f"{first.capacity_fps:.1f} frames/s): a burst of frames at once, and sustained overload, then half the "
        "capacity. Ideal: min(frames, capacity x (send span + deadline)), capacity measured in-process before and "
        "after each run (their mean); achievable: the same with batches that "
        "fit the deadline at the service's measured batch latencies; recovery: last overload frame sent to the "
        "first in-time verdict after it.",
        "",
        *_table(["scenario", "batching", "frames", "judged / ideal", "achievable", "TIMEOUT", "OVERLOADED",
                 "one verdict each", "next frame judged", "recovery ms"], rows),
    ]


def report_markdown(report: BenchReport) -> str:
    v, line, soak = report.vision, report.line, report.soak
    best = max((r for r in line.runs if r.mode == "zeromq"), key=lambda r: r.frames_per_s.median)
    md = [
        "# lineguard benchmark report",
        "",
        f"{report.created_utc} on {report.machine}; bundle `{report.bundle_id}`; settings: {report.settings}; "
        f"the run took {report.wall_s / 60:.1f} min. Every number and figure below was measured in this run: "
        f"medians over interleaved rounds (vision {v.rounds}, line {line.rounds}) with the min-max in brackets; "
        "a ratio whose range crosses 1.0 is reported as no measurable difference.",
        "",
        "## Headlines",
        "",
        *(f"- {h}" for h in _headlines(report, best)),
        "",
        "## Vision chain: ONNX Runtime vs PyTorch eager",
        "",
        *_table(["batch", "ORT ms/frame", "PyTorch ms/frame", "speed-up", "whole inspection speed-up"],
                [[str(r.batch_size), _timing(r.onnxruntime), _timing(r.pytorch_eager),
                  _ratio(r.speedup, r.speedup_spread), _ratio(r.inspection_speedup, r.inspection_speedup_spread)]
                 for r in v.runs]),
        "Where ONNX Runtime's whole inspection spends its time, ms per frame:",
        "",
        *_table(["batch", *STAGE_NAMES], [[str(r.batch_size), *(_s(r.stages_ms[s], 2) if s in r.stages_ms else "-"
                                                                 for s in STAGE_NAMES)] for r in v.runs]),
        *_int8_table(report),
        "Preprocessing: resize first and one fused normalisation pass, against the path it replaced "
        "(colour conversion at full resolution, then float copies):",
        "",
        *_table(["frames", "fused preprocessing ms/frame", "replaced path ms/frame", "speed-up", "max abs diff"],
                [[f"{p_.batch_size} x {'x'.join(map(str, p_.frame_shape))}",
                  _s(p_.fused_ms_per_frame, 2), _s(p_.reference_ms_per_frame, 2), p_.speedup.effect(),
                  f"{p_.max_abs_diff:.2g}"] for p_ in v.preprocess]),
        *_figure(report, "vision", "ONNX Runtime vs PyTorch eager"),
        "## Throughput and latency vs batch size",
        "",
        "Closed loop: a bounded window of frames in flight, so the service is saturated but never overloaded "
        "(latency here is saturated-pipeline latency).",
        "",
        *_table(["mode", "max_batch", "frames/s", "p50 ms", "p99 ms"],
                [[r.mode, str(r.max_batch), _s(r.frames_per_s), _s(r.latency_p50_ms, 0), _s(r.latency_p99_ms, 0)]
                 for r in sorted(line.runs, key=lambda r: (r.mode, r.max_batch))]),
        *_figure(report, "batch", "throughput and latency vs batch size"),
        "## Transport overhead",
        "",
        *_table(["max_batch", "ZeroMQ / in-process throughput", "p50 added, ms"],
                [[str(t.max_batch), t.zeromq_vs_direct_throughput.effect(), _s(t.p50_added_ms)]
                 for t in report.transport]),
        *_figure(report, "transport", "transport overhead"),
        "## Offered load",
        "",
        "Open loop: one camera pushes at a fixed rate whatever the service's pace; beyond capacity frames end "
        "as TIMEOUT or OVERLOADED (each still gets its verdict).",
        "",
        *_table(["offered fps", "judged fps", "p50 ms", "p99 ms", "TIMEOUT", "OVERLOADED", "verdicts / frames"],
                [[f"{r.offered_fps:.1f}", f"{r.achieved_fps:.1f}", f"{r.latency_p50_ms:.0f}", f"{r.latency_p99_ms:.0f}",
                  str(r.timeouts), str(r.overloaded), f"{r.verdicts} / {r.frames_sent}"] for r in report.load]),
        *_figure(report, "load", "throughput and latency vs offered load"),
        *_triton(report),
        *_overload(report),
        "## LLM",
        "",
    ]
    if report.llm is not None:
        m = report.llm
        md += _table(["model", "threads", "load s", "TTFT p50 ms", "TTFT max ms", "tokens/s"],
                     [[f"{m.model} ({m.quantization})", str(m.threads), f"{m.load_s:.1f}",
                       f"{m.time_to_first_token_ms_p50:.0f}", f"{m.time_to_first_token_ms_max:.0f}", f"{m.tokens_per_s:.1f}"]])
        md += _figure(report, "llm", "LLM time to first token and tokens/s")
    if report.explanations is not None:
        e = report.explanations
        md += [f"Verdict p99 at max_batch {e.max_batch}: {_s(e.verdict_p99_without_ms, 0)} ms without explanations, "
               f"{_s(e.verdict_p99_with_ms, 0)} ms while they stream back to back: {e.ratio.effect()}.", ""]
        md += _figure(report, "explanations", "verdict p99 with and without explanations")
    md += [f"Not measured: {what}: {why}" for what, why in report.not_measured.items()] + [""]
    md += [
        "## Soak",
        "",
        f"A `lineguard serve` process, {soak.cameras} cameras, {soak.offered_fps:.1f} frames/s of mixed traffic "
        f"(good, defective, malformed, unaddressable) for {soak.duration_s:.0f} s: {soak.frames_sent} frames, "
        f"{soak.verdicts_received} verdicts for {soak.frames_addressable} addressable frames (missing {soak.missing}, "
        f"duplicates {soak.duplicates}), {soak.dropped_counted} of {soak.frames_unaddressable} unaddressable counted "
        f"dropped; inspected p50 {soak.latency_p50_ms:.0f} ms, p99 {soak.latency_p99_ms:.0f} ms. RSS "
        f"{soak.rss_start_mb:.0f} MB at the warm mark, {soak.rss_end_mb:.0f} MB at the end (peak {soak.rss_peak_mb:.0f} "
        f"MB, slope {soak.rss_slope_mb_per_min:+.2f} MB/min).",
        "",
        *_figure(report, "soak", "RSS over the soak"),
    ]
    return "\n".join(md) + "\n"


STAGE_NAMES = ("preprocess", "encoder", "decoder", "scoring")


def _triton(report: BenchReport) -> list[str]:
    t = report.triton
    if t is None:
        return []
    return ["## Central Triton", "",
            f"The same {t.frames} frames, batches of {t.max_batch}, judged in-process and with the encoder and decoder "
            f"in a real {t.server} over loopback gRPC ({t.rounds} interleaved rounds):", "",
            *_table(["where the models run", "frames/s", "p50 ms"],
                    [["in-process", _s(t.in_process_fps), _s(t.in_process_p50_ms, 0)],
                     ["Triton", _s(t.triton_fps), _s(t.triton_p50_ms, 0)]]),
            f"Triton over in-process throughput: {t.triton_vs_in_process.effect()}.", ""]


def _int8_table(report: BenchReport) -> list[str]:
    runs = [r for r in report.vision.runs if r.inspection_onnxruntime_int8 is not None]
    if not runs:
        return []
    return ["Whole inspection with ONNX Runtime's INT8 encoder (static quantisation calibrated on the bench "
            "product's normals; a line uses it only after `lineguard export int8` checked it on its products):", "",
            *_table(["batch", "FP32 ms/frame", "INT8 ms/frame", "speed-up", "verdicts equal to FP32"],
                    [[str(r.batch_size), _timing(r.inspection_onnxruntime), _timing(r.inspection_onnxruntime_int8),
                      r.int8_inspection_speedup.effect() if r.int8_inspection_speedup else "-",
                      f"{r.int8_verdicts_equal:.0%}"] for r in runs])]


def _timing(t) -> str:
    return _s(t.ms_per_frame_spread) if t.ms_per_frame_spread is not None else f"{t.ms_per_frame:.1f}"


def _ratio(median: float, spread: Spread | None) -> str:
    """The median first (as a figure to compare), then the range or the no-difference label."""
    if spread is None:
        return f"{median:.2f}x"
    if spread.crosses(1.0):
        return f"{median:.2f}x: {spread.effect()}"
    return f"{median:.2f}x ({spread.low:.2f}-{spread.high:.2f})"


def _headlines(report: BenchReport, best: LineRoundsRun) -> list[str]:
    v = report.vision.runs
    lines = [
        "vision chain, ONNX Runtime over PyTorch eager: " + ", ".join(
            f"{_ratio(r.speedup, r.speedup_spread)} at batch {r.batch_size}" for r in v),
        f"line service over ZeroMQ: {_s(best.frames_per_s)} frames/s at max_batch {best.max_batch} "
        f"(p99 {_s(best.latency_p99_ms, 0)} ms); of in-process throughput: " + ", ".join(
            f"{t.zeromq_vs_direct_throughput.effect()} at batch {t.max_batch}" for t in report.transport),
    ]
    if report.line.microbatch_gain is not None:
        lines.append(f"micro-batching, ZeroMQ frames/s at the largest over the smallest max_batch: "
                     f"{report.line.microbatch_gain.effect()}")
    if report.load:
        top = max(report.load, key=lambda r: r.achieved_fps)
        lines.append(f"offered load: up to {top.achieved_fps:.1f} judged frames/s; p99 "
                     + ", ".join(f"{r.latency_p99_ms:.0f} ms at {r.offered_fps:.1f} fps" for r in report.load))
    if report.triton is not None:
        lines.append(f"central Triton ({report.triton.server}), over in-process throughput: "
                     f"{report.triton.triton_vs_in_process.effect()}")
    if report.llm is not None:
        lines.append(f"LLM: time to first token {report.llm.time_to_first_token_ms_p50:.0f} ms (p50), "
                     f"{report.llm.tokens_per_s:.1f} tokens/s")
    if report.explanations is not None:
        lines.append(f"verdict p99 while explanations stream, over without: {report.explanations.ratio.effect()}")
    lines.append(f"soak: {report.soak.verdicts_received}/{report.soak.frames_addressable} verdicts, RSS growth "
                 f"{report.soak.rss_growth_mb:+.1f} MB over {report.soak.duration_s:.0f} s")
    return lines
