"""The figures of ``lineguard bench all``: matplotlib (Agg, no display) PNGs drawn from one BenchReport.

Usage::

    from lineguard.bench.plots import write_figures

    figures = write_figures(report, Path("artifacts/bench"))   # {"vision": "vision.png", ...}

One function per figure; each returns the figure or None when the report has no data for it (the
report's ``not_measured`` says why). Bars and points are medians over the benchmark's interleaved
rounds; error bars span the min-max over those rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display on a line PC or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from lineguard.bench.report import BenchReport
    from lineguard.bench.rounds import Spread

ORT, TORCH, DIRECT, ZMQ = "#1f77b4", "#d62728", "#2ca02c", "#9467bd"


def _medians(spreads: list[Spread]) -> list[float]:
    return [s.median for s in spreads]


def _errors(spreads: list[Spread]) -> np.ndarray:
    """(2, N) below/above the median: matplotlib's yerr for min-max error bars."""
    return np.array([s.error for s in spreads]).T.reshape(2, len(spreads))


def _ratio_label(spread: Spread | None, median: float) -> str:
    if spread is None:
        return f"{median:.1f}x"
    return "no measurable\ndifference" if spread.crosses(1.0) else f"{median:.1f}x\n({spread.low:.1f}-{spread.high:.1f})"


def vision_figure(report: BenchReport) -> Figure:
    runs = report.vision.runs
    x = np.arange(len(runs))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, (title, ort, ref, ratios) in zip(axes, (
            ("encoder + decoder (exported chain)", [r.onnxruntime for r in runs], [r.pytorch_eager for r in runs],
             [(r.speedup, r.speedup_spread) for r in runs]),
            ("whole inspection (+ few-shot scoring)", [r.inspection_onnxruntime for r in runs],
             [r.inspection_pytorch_eager for r in runs], [(r.inspection_speedup, r.inspection_speedup_spread)
                                                          for r in runs])), strict=True):
        for offset, timings, label, color in ((-0.2, ort, "ONNX Runtime", ORT), (0.2, ref, "PyTorch eager", TORCH)):
            spreads = [t.ms_per_frame_spread for t in timings]
            yerr = _errors(spreads) if all(spreads) else None
            ax.bar(x + offset, [t.ms_per_frame for t in timings], 0.4, yerr=yerr, capsize=4, label=label, color=color)
        highs = [max(t.ms_per_frame_spread.high if t.ms_per_frame_spread else t.ms_per_frame for t in pair)
                 for pair in zip(ort, ref, strict=True)]
        for i, (median, spread) in enumerate(ratios):
            ax.text(i, highs[i] * 1.04, _ratio_label(spread, median), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(top=max(highs) * 1.6)  # room for the ratio labels and the legend
        ax.set_xticks(x, [f"batch {r.batch_size}" for r in runs])
        ax.set_ylabel("ms per frame (median, min-max over rounds)")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Vision chain, {report.vision.threads} threads: ONNX Runtime vs PyTorch eager")
    return fig


def batch_figure(report: BenchReport) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, color in (("direct", DIRECT), ("zeromq", ZMQ)):
        runs = sorted((r for r in report.line.runs if r.mode == mode), key=lambda r: r.max_batch)
        b = [r.max_batch for r in runs]
        fps = [r.frames_per_s for r in runs]
        left.errorbar(b, _medians(fps), yerr=_errors(fps), fmt="o-", capsize=3, color=color, label=mode)
        p50, p99 = [r.latency_p50_ms for r in runs], [r.latency_p99_ms for r in runs]
        right.errorbar(b, _medians(p50), yerr=_errors(p50), fmt="o-", capsize=3, color=color, label=f"{mode} p50")
        right.errorbar(b, _medians(p99), yerr=_errors(p99), fmt="s--", capsize=3, color=color, label=f"{mode} p99")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("max_batch")
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel("frames/s")
    left.set_title("throughput vs batch size")
    right.set_ylabel("latency, ms")
    right.set_title("latency vs batch size (saturated)")
    return fig


def transport_figure(report: BenchReport) -> Figure:
    t = report.transport
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(t))
    ratios = [o.zeromq_vs_direct_throughput for o in t]
    left.bar(x, _medians(ratios), yerr=_errors(ratios), capsize=4, color=ZMQ)
    left.axhline(1.0, color="k", lw=0.8)
    for i, spread in enumerate(ratios):
        if spread.crosses(1.0):
            left.text(i, spread.high * 1.02, "no measurable\ndifference", ha="center", va="bottom", fontsize=8)
    left.set_ylim(top=max(s.high for s in ratios) * 1.25)
    left.set_xticks(x, [f"batch {o.max_batch}" for o in t])
    left.set_ylabel("ZeroMQ / in-process throughput")
    left.set_title("transport + service: throughput kept")
    added = [o.p50_added_ms for o in t]
    right.bar(x, _medians(added), yerr=_errors(added), capsize=4, color=ZMQ)
    right.set_xticks(x, [f"batch {o.max_batch}" for o in t])
    right.set_ylabel("ms")
    right.set_title("p50 latency added by ZeroMQ + service")
    return fig


def load_figure(report: BenchReport) -> Figure:
    runs = report.load
    offered = [r.offered_fps for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(offered, [r.achieved_fps for r in runs], "o-", color=ZMQ, label="judged (OK/NG)")
    refused = [(r.timeouts + r.overloaded) / r.duration_s for r in runs]
    left.plot(offered, refused, "x--", color=TORCH, label="TIMEOUT + OVERLOADED")
    top = max(offered) * 1.05
    left.plot([0, top], [0, top], ":", color="grey", label="offered")
    left.set_xlabel("offered frames/s")
    left.set_ylabel("verdicts/s")
    left.set_title(f"throughput vs offered load (max_batch {runs[0].max_batch})")
    left.legend()
    right.plot(offered, [r.latency_p50_ms for r in runs], "o-", color=ZMQ, label="p50")
    right.plot(offered, [r.latency_p99_ms for r in runs], "s--", color=ZMQ, label="p99")
    right.axhline(runs[0].deadline_ms, color=TORCH, lw=0.8, label=f"deadline {runs[0].deadline_ms:.0f} ms")
    right.set_xlabel("offered frames/s")
    right.set_ylabel("latency of judged frames, ms")
    right.set_title("latency vs offered load")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return fig


def llm_figure(report: BenchReport) -> Figure | None:
    if report.llm is None:
        return None
    m = report.llm
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4))
    left.bar(["p50", "max"], [m.time_to_first_token_ms_p50, m.time_to_first_token_ms_max], color=ORT)
    left.set_ylabel("ms")
    left.set_title("time to first token")
    right.bar(["decode"], [m.tokens_per_s], color=ORT)
    right.set_ylabel("tokens/s")
    right.set_title(f"{m.model} ({m.quantization}, {m.threads} threads)")
    return fig


def explanations_figure(report: BenchReport) -> Figure | None:
    e = report.explanations
    if e is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    both = [e.verdict_p99_without_ms, e.verdict_p99_with_ms]
    ax.bar(["without", "with explanations"], _medians(both), yerr=_errors(both), capsize=4, color=[ZMQ, TORCH])
    ax.set_ylabel("verdict p99, ms (median, min-max over rounds)")
    ax.set_title("verdict p99 while explanations stream: " + _ratio_label(e.ratio, e.ratio.median).replace("\n", " "))
    return fig


def soak_figure(report: BenchReport) -> Figure:
    s = report.soak
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r.t_s for r in s.rss], [r.rss_mb for r in s.rss], color=ORT)
    ax.axvline(s.warm_at_s, color="grey", ls=":", label="warm mark (growth measured from here)")
    ax.set_xlabel("s")
    ax.set_ylabel("RSS of the service, MB")
    ax.set_title(f"soak: {s.cameras} cameras, {s.offered_fps:.1f} frames/s mixed; growth {s.rss_growth_mb:+.1f} MB")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


FIGURES: dict[str, Callable[[BenchReport], Figure | None]] = {
    "vision": vision_figure, "batch": batch_figure, "transport": transport_figure, "load": load_figure,
    "llm": llm_figure, "explanations": explanations_figure, "soak": soak_figure,
}


def write_figures(report: BenchReport, out: Path) -> dict[str, str]:
    """Draw every figure the report has data for into ``out``; returns figure -> PNG file name."""
    written = {}
    for name, draw in FIGURES.items():
        fig = draw(report)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        written[name] = f"{name}.png"
    return written
