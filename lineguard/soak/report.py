"""What a soak found: ``SoakResult`` (verdict accounting, latency, memory and open files, explanation replies)
and how the raw observations of a run are summarised into it."""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel, Field

from lineguard.runtime.contract import Verdict
from lineguard.soak.leaks import check_leaks
from lineguard.soak.plan import SoakPlan
from lineguard.soak.sampling import RssSample
from lineguard.soak.traffic import Camera

Arrivals = dict[tuple[str, str], list[tuple[float, Verdict]]]  # (camera, frame) -> (arrival time, verdict) each


class SoakResult(BaseModel):
    """Everything a soak measured (nothing here is judged but the leak: the caller asserts)."""

    duration_s: float
    cameras: int
    offered_fps: float
    frames_sent: int
    frames_addressable: int  # each must get exactly one verdict
    frames_unaddressable: int  # each must be counted dropped
    verdicts_received: int
    missing: int  # addressable frames without a verdict
    duplicates: int  # verdicts beyond the first for a frame
    dropped_counted: int  # the service's dropped count over the run
    sends_refused: int  # frames the camera could not hand over (not counted as sent)
    verdict_classes: dict[str, int]
    error_codes: dict[str, int]
    latency_p50_ms: float  # inspected frames (OK/NG): send to verdict arrival
    latency_p99_ms: float
    latency_max_ms: float
    warm_at_s: float  # the warm mark: RSS growth is measured from here
    rss_start_mb: float  # at the warm mark
    rss_end_mb: float
    rss_peak_mb: float
    rss_growth_mb: float  # end minus warm mark
    rss_slope_mb_per_min: float  # least-squares slope after the warm mark
    rss_slope_stderr_mb_per_min: float = 0.0
    open_files_start: int | None = None  # at the warm mark
    open_files_end: int | None = None
    fds_slope_per_min: float | None = None  # least-squares slope of open files after the warm mark
    fds_slope_stderr_per_min: float | None = None
    rss_slope_bound_mb_per_min: float = 2.0  # the plan's bound, or leak_bound over the measured window
    fds_slope_bound_per_min: float = 2.0
    slope_window_s: float = 0.0  # the stream after the warm mark: what the slopes were fitted over
    leak_suspected: bool = False  # a slope beyond its bound
    leak_reasons: list[str] = Field(default_factory=list)
    explanation_requests: int = 0  # requests that each must get a final or an error reply
    explanation_replies: dict[str, int] = Field(default_factory=dict)  # final / cancelled / error code
    explanations_unanswered: int = 0
    rss: list[RssSample]


def summarise(plan: SoakPlan, cameras: list[Camera], arrivals: Arrivals, expected: set[tuple[str, str]],
              unaddressable: int, dropped: int, rss: list[RssSample]) -> SoakResult:
    """The result of a run: ``expected`` (camera, frame) pairs were sent addressable, ``unaddressable`` frames
    too broken to name their camera, ``dropped`` of which the service counted; ``rss`` sampled throughout."""
    sent_at = {(c.camera_id, f): t for c in cameras for f, t in c.sent.items()}
    firsts = {key: got[0] for key, got in arrivals.items() if key in expected}
    classes = Counter(v.verdict for _, v in firsts.values())
    codes = Counter(str(v.error.code) for _, v in firsts.values() if v.error is not None)
    inspected = [(t - sent_at[key]) * 1e3 for key, (t, v) in firsts.items() if v.verdict in ("OK", "NG")]
    ms = np.asarray(inspected or [float("nan")])
    leaks = check_leaks(plan, rss)
    warm = leaks.warm
    counted = [s for s in warm if s.open_files is not None]
    return SoakResult(
        rss_slope_stderr_mb_per_min=leaks.rss.stderr_per_min,
        open_files_start=counted[0].open_files if counted else None,
        open_files_end=rss[-1].open_files,
        fds_slope_per_min=leaks.fds.per_min if leaks.fds else None,
        fds_slope_stderr_per_min=leaks.fds.stderr_per_min if leaks.fds else None,
        rss_slope_bound_mb_per_min=leaks.rss_bound_mb_per_min, fds_slope_bound_per_min=leaks.fds_bound_per_min,
        slope_window_s=plan.window_s, leak_suspected=bool(leaks.reasons), leak_reasons=leaks.reasons,
        duration_s=plan.duration_s, cameras=plan.cameras, offered_fps=plan.cameras * plan.fps,
        frames_sent=len(expected) + unaddressable, frames_addressable=len(expected),
        frames_unaddressable=unaddressable, verdicts_received=sum(len(v) for v in arrivals.values()),
        missing=len(expected - arrivals.keys()),
        duplicates=sum(len(v) - 1 for v in arrivals.values()) + len(arrivals.keys() - expected),
        dropped_counted=dropped, sends_refused=sum(c.refused for c in cameras),
        verdict_classes=dict(classes), error_codes=dict(codes),
        latency_p50_ms=float(np.percentile(ms, 50)), latency_p99_ms=float(np.percentile(ms, 99)),
        latency_max_ms=float(ms.max()),
        warm_at_s=plan.warm_s, rss_start_mb=warm[0].rss_mb, rss_end_mb=rss[-1].rss_mb,
        rss_peak_mb=max(s.rss_mb for s in rss), rss_growth_mb=rss[-1].rss_mb - warm[0].rss_mb,
        rss_slope_mb_per_min=leaks.rss.per_min, rss=rss,
    )
