"""Telling a leak from a service that settles: slopes after the warm mark, their bounds, the memory bound.

Usage::

    fit_slope(t_s, rss_mb)                       # Slope: least squares, per minute, with its standard error
    leak_bound(window_s, RSS_STEP_MB, MIN_RSS_BOUND_MB_PER_MIN)   # the slope a leak must exceed
    memory_bound_mb(config, frame_bytes)         # the RSS growth every bounded buffer full can explain

A slope beyond its bound is a leak: by default (:func:`leak_bound`) a slope that adds more than 2 MB (2 files)
over the measured window and at least 2 MB/min (2 files/min), so a longer soak resolves a smaller leak.
A healthy service is flat once warm, while a leak of a few KiB per frame climbs steadily. The window's net
rise (its last samples against its first) must exceed that step too: one allocator step inside a short
window tilts a least-squares line by up to 1.5 times its height over the window, a leak rises the whole way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from lineguard.runtime.line.config import LineConfig
from lineguard.soak.plan import SoakPlan
from lineguard.soak.sampling import MIB, RssSample

# What a healthy service may still show in its measured window: the allocator grows in steps (an arena, a
# larger batch's buffers) that stop once every kind of message has been seen, and sockets come and go.
RSS_STEP_MB = 2.0
FDS_STEP = 2.0
MIN_RSS_BOUND_MB_PER_MIN = 2.0
MIN_FDS_BOUND_PER_MIN = 2.0


class Slope(BaseModel):
    """A least-squares line through the samples after the warm mark (transient spikes set aside)."""

    per_min: float  # units per minute
    stderr_per_min: float  # standard error of the slope
    samples: int
    outliers: int = 0  # samples set aside as transient spikes (beyond 5 median deviations of the first fit)


def leak_bound(window_s: float, step: float, floor: float) -> float:
    """The slope a leak must exceed to be told from healthy settling: adding more than ``step`` over the
    measured window, and at least ``floor`` per minute (a long soak resolves smaller leaks)."""
    return max(floor, step / max(window_s / 60.0, 1e-9))


def fit_slope(t_s: Sequence[float], values: Sequence[float]) -> Slope:
    """Least-squares slope of ``values`` over ``t_s`` (seconds), per minute, with its standard error.

    A sample far off the first fit (beyond 5 median absolute deviations: a batch's buffers caught in flight)
    is set aside and the line fitted again; a leak is a trend through every sample, which this keeps."""
    t, y = np.asarray(t_s, float), np.asarray(values, float)
    if len(t) < 3 or np.ptp(t) <= 0:
        return Slope(per_min=0.0, stderr_per_min=0.0, samples=len(t))
    slope, intercept = np.polyfit(t, y, 1)
    residuals = y - (slope * t + intercept)
    deviation = np.abs(residuals - np.median(residuals))
    keep = deviation <= max(5 * 1.4826 * float(np.median(deviation)), 1e-9)
    if 3 <= keep.sum() < len(t) and np.ptp(t[keep]) > 0:
        slope, intercept = np.polyfit(t[keep], y[keep], 1)
        t, y = t[keep], y[keep]
        residuals = y - (slope * t + intercept)
    stderr = float(np.sqrt(residuals @ residuals / max(len(t) - 2, 1) / np.sum((t - t.mean()) ** 2)))
    return Slope(per_min=float(slope) * 60, stderr_per_min=stderr * 60, samples=len(t),
                 outliers=int(len(values) - len(t)))


def net_rise(values: Sequence[float], edge: int = 3) -> float:
    """How much the series rose from its start to its end: the median of its last ``edge`` values less the
    median of its first ``edge`` (medians, so one sample caught mid-batch does not count)."""
    if not values:
        return 0.0
    k = max(1, min(edge, len(values) // 2))
    return float(np.median(values[-k:]) - np.median(values[:k]))


class LeakCheck(BaseModel):
    """The slopes once warm, their bounds, and why (if at all) a leak is suspected."""

    warm: list[RssSample]  # the samples the slopes were fitted through
    rss: Slope
    fds: Slope | None  # None: open files not counted on this platform
    rss_bound_mb_per_min: float
    fds_bound_per_min: float
    reasons: list[str]


def check_leaks(plan: SoakPlan, rss: list[RssSample]) -> LeakCheck:
    """Fit the samples from the warm mark to the last frame sent and hold the slopes to their bounds."""
    warm_t = plan.warm_s
    # the fit covers the stream itself: from the warm mark until the last frame was sent (the drain after
    # it is idle time, which would flatten a leak's line)
    warm = [s for s in rss if warm_t <= s.t_s <= plan.duration_s] or [s for s in rss if s.t_s >= warm_t] or rss[-1:]
    rss_slope = fit_slope([s.t_s for s in warm], [s.rss_mb for s in warm])
    counted = [s for s in warm if s.open_files is not None]
    fds_slope = fit_slope([s.t_s for s in counted], [s.open_files or 0 for s in counted]) if counted else None
    rss_bound = plan.rss_slope_bound_mb_per_min or leak_bound(plan.window_s, RSS_STEP_MB, MIN_RSS_BOUND_MB_PER_MIN)
    fds_bound = plan.fds_slope_bound_per_min or leak_bound(plan.window_s, FDS_STEP, MIN_FDS_BOUND_PER_MIN)
    reasons = []
    if rss_slope.per_min > rss_bound and net_rise([s.rss_mb for s in warm]) > RSS_STEP_MB:
        reasons.append(f"RSS grows {rss_slope.per_min:+.2f} MB/min (± {rss_slope.stderr_per_min:.2f}) once warm, "
                       f"beyond {rss_bound:.2f} MB/min")
    if fds_slope is not None and fds_slope.per_min > fds_bound and net_rise([s.open_files or 0 for s in counted]) > FDS_STEP:
        reasons.append(f"open files grow {fds_slope.per_min:+.2f}/min (± {fds_slope.stderr_per_min:.2f}) once warm, "
                       f"beyond {fds_bound:.2f}/min")
    return LeakCheck(warm=warm, rss=rss_slope, fds=fds_slope, rss_bound_mb_per_min=rss_bound,
                     fds_bound_per_min=fds_bound, reasons=reasons)


def memory_bound_mb(config: LineConfig, frame_bytes: int, slack_mb: float = 64.0) -> float:
    """The RSS growth a healthy service may show once warm: every bounded buffer full, plus allocator slack.

    Frames can be held in the inference queue, the frames and inspect sockets' receive queues (their
    high-water marks) and one batch per worker in flight; verdicts in the PUB send queue are ~1 KB each.
    Anything that keeps growing past that is a leak. ``slack_mb`` covers allocator fragmentation and
    ONNX Runtime's arena settling.
    """
    b, hwm = config.batching, config.hwm
    frames = b.max_queue + hwm.frames_rcv + hwm.inspect_rcv + b.workers * b.max_batch
    return (frames * frame_bytes + hwm.verdicts_snd * 1024) / MIB + slack_mb
