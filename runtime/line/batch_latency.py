"""How long a batch of each size takes on this machine: the latency model deadline-aware batching plans with.

A batch's size is counted in units of frames inspected whole: a frame of a product inspected as n x n tiles
(lineguard.runtime.inference.tiling) runs n² encoder items and counts n² units, so products of both kinds
on one line share one model (a batch of 2 frames in 2 x 2 tiles is planned as 8 whole frames).

Usage::

    from lineguard.runtime.line.batch_latency import BatchLatency

    latency = BatchLatency(margin_deviations=2.0)
    latency.observe(1, 0.081)          # the warm-up's timed batches, then every batch the workers run
    latency.observe(8, 0.600)
    latency.mean(4)                    # 0.32: no batch of 4 measured yet, so the line through 1 and 8
    latency.predict(4)                 # what the batcher plans with: the mean plus a safety margin
    latency.predict(2 * 4)             # 2 frames of a product inspected as 2 x 2 tiles: 8 units
    latency.capacity_fps()             # 13.3: whole frames/s at the best measured batch size

The estimate of a measured size is an EWMA of its batches (it follows a machine that gets busier); an
unmeasured size falls back to a least-squares line through the measured ones (batch time grows about
linearly with the batch on a CPU), never below a smaller measured size. With one size measured, larger
sizes are scaled proportionally and smaller ones cost the same: pessimistic until measured.

The margin is ``margin_deviations`` times the mean relative error of recent predictions (Jacobson's
round-trip estimate, as TCP sizes its retransmission timer), pooled over all sizes so that it learns from
every batch: a steady machine gets tight plans, a noisy one (other processes on the same cores) wider.
Thread-safe: workers observe while others plan.
"""

from __future__ import annotations

import threading

SMOOTHING = 0.3  # weight of a new batch in its size's mean
DEVIATION_GAIN = 0.25  # weight of a new prediction error in the pooled relative deviation
PRIOR_RELATIVE_DEVIATION = 0.05  # until batches of a size have been measured again


def warm_up_sizes(max_batch: int) -> list[int]:
    """Batch sizes the warm-up times: every size up to 4, then powers of two, and max_batch. Small
    batches are the ones a tight deadline allows, and on a CPU their cost is far from a straight line
    (here 2 frames took 1.3x one, 3 frames 2.3x: the intra-op threads split a batch unevenly)."""
    doubling = {2**k for k in range(max_batch.bit_length()) if 2**k <= max_batch}
    return sorted({*range(1, min(4, max_batch) + 1), *doubling, max_batch})


class BatchLatency:
    """Seconds per batch size: measured means (EWMA), a linear fit for the rest, a learnt safety margin."""

    def __init__(self, margin_deviations: float = 2.0) -> None:
        if margin_deviations < 0:
            raise ValueError("margin_deviations must not be negative")
        self.margin_deviations = margin_deviations
        self._means: dict[int, float] = {}
        self._relative_deviation = PRIOR_RELATIVE_DEVIATION
        self._fit: tuple[float, float] | None = None  # (intercept, slope) through the measured means
        self._lock = threading.Lock()

    def observe(self, size: int, seconds: float) -> None:
        """One batch of ``size`` units (frames times each one's units) took ``seconds`` (decode + inference)."""
        if size < 1 or seconds < 0:
            raise ValueError(f"bad observation: {size} units in {seconds} s")
        with self._lock:
            mean = self._means.get(size)
            if mean is None:
                self._means[size] = seconds
            else:
                if mean > 0:
                    error = abs(seconds - mean) / mean
                    self._relative_deviation += DEVIATION_GAIN * (error - self._relative_deviation)
                self._means[size] = mean + SMOOTHING * (seconds - mean)
            self._fit = None

    def mean(self, size: int) -> float | None:
        """Expected seconds for a batch of ``size``; None while nothing has been measured."""
        with self._lock:
            return self._mean(size)

    def predict(self, size: int) -> float | None:
        """Seconds to plan a batch of ``size`` with: the mean plus the margin; None while unmeasured."""
        with self._lock:
            mean = self._mean(size)
            if mean is None:
                return None
            return mean * (1.0 + self.margin_deviations * self._relative_deviation)

    @property
    def relative_deviation(self) -> float:
        """Mean relative error of recent predictions (pooled over sizes)."""
        return self._relative_deviation

    def measured(self) -> dict[int, float]:
        """Measured sizes -> mean seconds."""
        with self._lock:
            return dict(sorted(self._means.items()))

    def capacity_fps(self) -> float | None:
        """Whole frames (units) per second at the most efficient measured batch size (None while unmeasured)."""
        with self._lock:
            rates = [size / mean for size, mean in self._means.items() if mean > 0]
        return max(rates) if rates else None

    def _mean(self, size: int) -> float | None:
        if size in self._means:
            return self._means[size]
        if not self._means:
            return None
        below = [mean for s, mean in self._means.items() if s < size]
        floor = max(below, default=0.0)  # a bigger batch never takes less than a smaller measured one
        if len(self._means) == 1:
            (only, mean), = self._means.items()
            return mean * max(1.0, size / only)  # larger: proportional; smaller: as long (pessimistic)
        intercept, slope = self._line()
        return max(floor, intercept + slope * size, 1e-6)

    def _line(self) -> tuple[float, float]:
        """Least-squares line through (size, mean) of the measured sizes (at least two)."""
        if self._fit is None:
            sizes = list(self._means)
            n = len(sizes)
            mx = sum(sizes) / n
            my = sum(self._means.values()) / n
            sxx = sum((s - mx) ** 2 for s in sizes)
            slope = max(0.0, sum((s - mx) * (self._means[s] - my) for s in sizes) / sxx)
            self._fit = (my - slope * mx, slope)
        return self._fit
