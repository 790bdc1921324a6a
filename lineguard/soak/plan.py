"""What a soak runs: how long, how many cameras at what rate, how often memory is sampled, the leak bounds."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SoakPlan(BaseModel):
    """How long and how hard to drive the service, and when its memory counts as leaking."""

    duration_s: float = 20.0
    cameras: int = 3
    fps: float = 4.0  # per camera
    rss_interval_s: float = 0.5  # RSS and open files sampled this often
    warm_fraction: float = 0.3  # slopes and growth are measured from this point of the run (allocators warm)
    drain_timeout_s: float = 60.0  # after the last frame: longest wait for the outstanding verdicts
    connect_timeout_s: float = 30.0  # longest wait for the service's first heartbeat (it may be starting)
    explain_interval_s: float = 1.0  # one explanation request this often (with an explanations endpoint)
    rss_slope_bound_mb_per_min: float | None = Field(None, gt=0, description="a steeper RSS slope once warm is a "
                                                     "leak; None: leak_bound(window, RSS_STEP_MB)")
    fds_slope_bound_per_min: float | None = Field(None, gt=0, description="a steeper open-files slope once warm "
                                                  "is a leak; None: leak_bound(window, FDS_STEP)")
    seed: int = 0

    @property
    def warm_s(self) -> float:
        """Seconds of the stream before the slopes start (allocators, arenas and caches settle)."""
        return self.warm_fraction * self.duration_s

    @property
    def window_s(self) -> float:
        """The stream after the warm mark: what the slopes are fitted over."""
        return max(self.duration_s - self.warm_s, 0.0)
