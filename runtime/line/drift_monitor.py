"""The calibration-drift alarm: does each camera's reject rate still fit the line's false-reject budget?

Usage::

    from lineguard.runtime.line.drift_monitor import DriftMonitor, DriftSettings

    monitor = DriftMonitor(budget=0.01, settings=DriftSettings(window=500, min_verdicts=50, alpha=1e-3))
    monitor.observe(verdict)            # every published verdict; only calibrated few-shot OK/NG count
    snap = monitor.snapshot()           # safe from any thread
    snap.windows                        # [DriftWindow]: per camera and product, reject rate, KS of p-values
    snap.alarms                         # [DriftAlarm]: camera, product, reject rate, budget, window size
    monitor.reset(product="tile")       # after re-calibrating: the old window was judged by the old calibration

A calibrated few-shot verdict is NG when its p-value is below the budget, so on normal parts NG is a
coin that lands with probability ``budget``. Per (camera, product) the monitor keeps the last ``window``
decided verdicts (OK/NG of the few-shot, calibrated kind: ERROR, TIMEOUT, zero-shot, LLM-decided and
uncalibrated verdicts are left out) and asks the exact one-sided binomial question "how likely are at
least this many NG in n verdicts, if each is NG with probability budget?" (``scipy.stats.binom.sf``).

* raised when that tail probability is below ``alpha`` (default 1e-3) once at least ``min_verdicts``
  verdicts are in the window;
* cleared (hysteresis) only when it is back at or above ``clear_alpha`` (default 0.05): the excess is
  no longer even weakly significant, which in practice means the window has turned over.

With a steady stream at the budget, a full window raises the alarm with probability below ``alpha``;
at 10x the budget it is raised within one window. The p-values themselves should be uniform on (0, 1)
for normal parts: each window reports the Kolmogorov-Smirnov statistic against U(0, 1)
(``scipy.stats.kstest``) and the shares of p below 0.5 and 0.1 (expected: 0.5 and 0.1), so a slow shift
(new lighting, a new batch of material) shows before the reject rate crosses the line. The alarm does
not tell drift from a real run of defects: both mean the rejects are more than the budget explains.

The test is cheap per verdict: the smallest alarming NG count for each window size is computed once
(scipy, lazily imported) and cached, so ``observe`` does a few integer comparisons on the loop thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineguard.runtime.contract import DriftAlarm, DriftWindow, Verdict, describe_alarm

log = logging.getLogger(__name__)

# ``Verdict.calibration`` statuses whose p-values say nothing about a budget (conformal, tail and
# provisional ones do: a provisional calibration that over-rejects is what this alarm is for)
UNCALIBRATED = frozenset({"uncalibrated"})


class DriftSettings(BaseModel):
    """``drift:`` in the line config: the calibration-drift alarm (lineguard.runtime.line.drift_monitor)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window: int = Field(500, ge=10, le=100_000, description="decided verdicts kept per camera and product")
    min_verdicts: int = Field(50, ge=10, description="no alarm on fewer verdicts than this in the window")
    max_windows: int = Field(64, ge=1, le=4096, description="cameras x products watched; beyond, the window "
                             "that went longest without a verdict is dropped (camera ids come off the wire)")
    alpha: float = Field(1e-3, gt=0.0, lt=0.5, description="raise when P(NG count >= observed | budget) < alpha")
    clear_alpha: float = Field(0.05, gt=0.0, lt=1.0, description="clear when that probability is back >= this")

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        if self.min_verdicts > self.window:
            raise ValueError(f"min_verdicts ({self.min_verdicts}) cannot exceed window ({self.window})")
        if self.clear_alpha <= self.alpha:
            raise ValueError(f"clear_alpha ({self.clear_alpha}) must be above alpha ({self.alpha}) for hysteresis")
        return self


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def binomial_tail(ng: int, n: int, budget: float) -> float:
    """P(X >= ng) for X ~ Binomial(n, budget): exact, one-sided."""
    from scipy.stats import binom

    return 1.0 if ng <= 0 else float(binom.sf(ng - 1, n, budget))


@lru_cache(maxsize=8192)
def critical_count(n: int, budget: float, alpha: float) -> int:
    """The smallest NG count whose binomial tail is below ``alpha`` (n + 1: none in n verdicts is)."""
    from scipy.stats import binom

    k = min(n + 1, max(0, int(binom.isf(alpha, n, budget)) + 1))  # isf: largest k with sf(k) > alpha, about
    while k > 0 and binomial_tail(k - 1, n, budget) < alpha:
        k -= 1
    while k <= n and binomial_tail(k, n, budget) >= alpha:
        k += 1
    return k


@dataclass
class _Window:
    ng_flags: deque[bool]
    p_values: deque[float]
    ng: int = 0
    alarm: DriftAlarm | None = None


@dataclass(frozen=True)
class DriftSnapshot:
    windows: list[DriftWindow] = field(default_factory=list)
    alarms: list[DriftAlarm] = field(default_factory=list)


class DriftMonitor:
    def __init__(self, budget: float, settings: DriftSettings | None = None) -> None:
        if not 0.0 < budget < 1.0:
            raise ValueError(f"budget must be in (0, 1), got {budget}")
        self.budget = budget
        self.settings = settings or DriftSettings()
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()  # least recently fed first
        self._lock = threading.Lock()  # observe on the loop thread, snapshot from heartbeat and /metrics
        if self.settings.enabled:  # scipy's import and the full window's count now, not on the serving loop
            critical_count(self.settings.window, budget, self.settings.alpha)

    @staticmethod
    def counts(verdict: Verdict) -> bool:
        """A verdict the budget speaks for: a calibrated few-shot OK/NG with a p-value, from a named camera."""
        if verdict.verdict not in ("OK", "NG") or verdict.decided_by != "few-shot" or verdict.p_value is None:
            return False
        if not verdict.camera_id:
            return False
        return getattr(verdict, "calibration", None) not in UNCALIBRATED  # absent on older verdicts: counted

    def observe(self, verdict: Verdict) -> None:
        """Count one published verdict (any kind: the ones the budget does not speak for are skipped)."""
        if self.settings.enabled and self.counts(verdict):
            self.record(verdict.camera_id, verdict.product, verdict.verdict == "NG", float(verdict.p_value or 0.0))

    def record(self, camera_id: str, product: str, ng: bool, p_value: float) -> None:
        """Add one decided verdict to its window and raise or clear that window's alarm."""
        s = self.settings
        with self._lock:
            w = self._windows.get((camera_id, product))
            if w is None:
                w = self._windows[(camera_id, product)] = _Window(deque(maxlen=s.window), deque(maxlen=s.window))
                while len(self._windows) > s.max_windows:  # bounded memory, whatever camera ids arrive
                    self._windows.popitem(last=False)
            else:
                self._windows.move_to_end((camera_id, product))
            if len(w.ng_flags) == s.window:
                w.ng -= w.ng_flags[0]
            w.ng_flags.append(ng)
            w.p_values.append(p_value)
            w.ng += ng
            n = len(w.ng_flags)
            if w.alarm is None:
                if n >= s.min_verdicts and w.ng >= critical_count(n, self.budget, s.alpha):
                    w.alarm = self._alarm(camera_id, product, w)
                    log.warning("%s", describe_alarm(w.alarm))
            elif w.ng < critical_count(n, self.budget, s.clear_alpha):
                w.alarm = None
                log.info("calibration drift on %s (%s) cleared: reject rate %.1f%% over the last %d verdicts",
                         camera_id, product, 100 * w.ng / n, n)

    def _alarm(self, camera_id: str, product: str, w: _Window) -> DriftAlarm:
        n = len(w.ng_flags)
        return DriftAlarm(camera_id=camera_id, product=product, reject_rate=w.ng / n, budget=self.budget, window=n,
                          ng=w.ng, tail_p=binomial_tail(w.ng, n, self.budget), since_ns=time.time_ns())

    def reset(self, product: str | None = None, camera_id: str | None = None) -> None:
        """Forget windows (and their alarms): all, or one product's, or one camera's. Call it when a product
        is re-calibrated: its old verdicts were judged against the calibration that drifted."""
        with self._lock:
            for key in [k for k in self._windows if (camera_id in (None, k[0]) and product in (None, k[1]))]:
                del self._windows[key]

    def snapshot(self) -> DriftSnapshot:
        """Every window's statistics now, and the alarms standing (their numbers brought up to date)."""
        with self._lock:
            copies = [(key, np.fromiter(w.p_values, np.float64, len(w.p_values)), w.ng, w.alarm)
                      for key, w in sorted(self._windows.items())]
        windows, alarms = [], []
        for (camera_id, product), p, ng, alarm in copies:
            n = len(p)
            if n == 0:
                continue
            ks_stat, ks_p = uniformity(p)
            tail = binomial_tail(ng, n, self.budget)
            windows.append(DriftWindow(
                camera_id=camera_id, product=product, verdicts=n, ng=ng, reject_rate=ng / n, budget=self.budget,
                tail_p=tail, ks_statistic=ks_stat, ks_p=ks_p, p_below_half=float(np.mean(p < 0.5)),
                p_below_tenth=float(np.mean(p < 0.1)), alarm=alarm is not None))
            if alarm is not None:
                alarms.append(alarm.model_copy(update={"reject_rate": ng / n, "window": n, "ng": ng, "tail_p": tail,
                                                       "ks_statistic": ks_stat}))
        return DriftSnapshot(windows, alarms)

    def alarms(self) -> list[DriftAlarm]:
        return self.snapshot().alarms

    def alarmed(self, camera_id: str, product: str) -> bool:
        """Whether that camera's window of that product has its alarm raised now (cheap: no statistics)."""
        with self._lock:
            w = self._windows.get((camera_id, product))
            return w is not None and w.alarm is not None


def uniformity(p_values: np.ndarray) -> tuple[float | None, float | None]:
    """Kolmogorov-Smirnov statistic and p-value of ``p_values`` against U(0, 1); (None, None) if empty."""
    if len(p_values) == 0:
        return None, None
    from scipy.stats import kstest

    result = kstest(np.clip(p_values, 0.0, 1.0), "uniform")
    stat, p = float(result.statistic), float(result.pvalue)
    return stat, (p if math.isfinite(p) else None)
