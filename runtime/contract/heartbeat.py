"""The PUB side's health messages: the heartbeat, its lifetime totals, and the calibration-drift windows.

Usage::

    from lineguard.runtime.contract import HEARTBEAT_TOPIC, Heartbeat, verdict_topic
    sub.setsockopt(zmq.SUBSCRIBE, verdict_topic("press3", "cam1"))   # b"verdict.press3.cam1."
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Totals(_Record):
    """Counts summed over every boot of a line (same meaning as the Heartbeat fields of one boot)."""

    boots: int = Field(0, ge=0)
    frames_in: int = Field(0, ge=0)
    verdicts_out: int = Field(0, ge=0)
    replies_out: int = Field(0, ge=0)
    dropped: int = Field(0, ge=0)
    archive_failures: int = Field(0, ge=0)
    verdicts: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, int] = Field(default_factory=dict)

    def plus(self, other: Totals) -> Totals:
        """Field-wise sum (dictionaries key by key)."""
        return Totals(
            boots=self.boots + other.boots, frames_in=self.frames_in + other.frames_in,
            verdicts_out=self.verdicts_out + other.verdicts_out, replies_out=self.replies_out + other.replies_out,
            dropped=self.dropped + other.dropped, archive_failures=self.archive_failures + other.archive_failures,
            verdicts=dict(Counter(self.verdicts) + Counter(other.verdicts)),
            errors=dict(Counter(self.errors) + Counter(other.errors)),
        )


class BootRecord(_Record):
    """One run of the service, as it last recorded itself."""

    boot_id: str
    started_ns: int = Field(ge=0, description="wall-clock start, ns since the epoch")
    last_verdict_seq: int = Field(0, ge=0, description="seq of the last verdict published (as of the save)")
    clean_stop: bool = Field(False, description="saved after the final drain; False: the run may have "
                             "published more verdicts after its last save (it crashed or was killed)")


class DriftWindow(_Record):
    """One camera's recent decided verdicts of one product, as the heartbeat and ``/metrics`` carry them."""

    camera_id: str
    product: str
    verdicts: int = Field(description="decided verdicts in the window (n)")
    ng: int
    reject_rate: float = Field(description="ng / verdicts")
    budget: float = Field(description="the false-reject budget the verdicts were decided with")
    tail_p: float = Field(description="P(at least ng NG in n verdicts | each NG with probability budget)")
    ks_statistic: float | None = Field(None, description="Kolmogorov-Smirnov distance of the window's p-values "
                                       "from U(0, 1); None without p-values")
    ks_p: float | None = None
    p_below_half: float | None = Field(None, description="share of p-values below 0.5 (0.5 when calibrated)")
    p_below_tenth: float | None = Field(None, description="share of p-values below 0.1 (0.1 when calibrated)")
    alarm: bool = False


class DriftAlarm(_Record):
    """A camera whose reject rate runs well above the false-reject budget (calibration drift)."""

    camera_id: str
    product: str
    reject_rate: float
    budget: float
    window: int = Field(description="decided verdicts the reject rate is measured over")
    ng: int
    tail_p: float
    ks_statistic: float | None = None
    since_ns: int = Field(description="wall clock when the alarm was raised")


def describe_alarm(alarm: DriftAlarm) -> str:
    """One line for operators: what is wrong, where, and how sure."""
    ks = f", p-value KS {alarm.ks_statistic:.2f}" if alarm.ks_statistic is not None else ""
    return (f"calibration drift on {alarm.camera_id} ({alarm.product}): reject rate {alarm.reject_rate:.1%} "
            f"over the last {alarm.window} verdicts ({alarm.ng} NG), budget {alarm.budget:.1%} "
            f"(P={alarm.tail_p:.1e}{ks})")


HEARTBEAT_TOPIC = b"heartbeat"


def verdict_topic(line: str, camera_id: str) -> bytes:
    """``verdict.<line>.<camera>.``: subscribe to a prefix of it (``verdict.``, ``verdict.<line>.``,
    ``verdict.<line>.<camera>.``). The trailing dot ends the camera id, so ``verdict.press3.cam1.`` never
    matches cam10's verdicts (ZeroMQ subscriptions are byte prefixes)."""
    return f"verdict.{line}.{camera_id}.".encode()


class Heartbeat(BaseModel):
    """Published on the ``heartbeat`` topic every ``heartbeat_interval_ms``: liveness and health.

    ``last_verdict_seq`` is the seq of the last verdict published before this heartbeat, so a
    subscriber also notices verdicts lost at the end of a burst. ``boot_id`` changes on every start.
    """

    model_config = ConfigDict(extra="forbid")

    line: str
    boot_id: str
    seq: int  # heartbeats of this boot, from 1
    timestamp_ns: int
    interval_ms: float
    uptime_s: float
    ready: bool
    draining: bool = False
    queue_depth: int = 0
    in_flight: int = 0
    frames_in: int = 0  # messages read from the frames and inspect sockets
    verdicts_out: int = 0  # verdicts published (= last_verdict_seq)
    replies_out: int = 0  # inspect replies sent
    last_verdict_seq: int = 0
    dropped: int = 0  # frames too broken to address: counted, not answered
    verdicts: dict[str, int] = Field(default_factory=dict)  # per verdict class
    errors: dict[str, int] = Field(default_factory=dict)  # per ErrorCode
    archive_failures: int = 0  # archive writes that failed (disk full, ...): verdicts went on; an alarm
    worker_restarts: int = 0  # inference workers that died and were replaced
    auth_denied: int = 0  # CURVE handshakes refused (key not allowed, no CURVE, wrong server key)
    camera_denied: int = 0  # frames whose CURVE key may not speak for their camera_id (CAMERA_NOT_ALLOWED)
    lifetime: Totals | None = None  # over every boot of the line (with ``state_file`` configured)
    previous_boot: BootRecord | None = None  # the boot before this one, as it last recorded itself
    drift: list[DriftWindow] = Field(default_factory=list)  # per camera and product: reject rate, p-value uniformity
    drift_alarms: list[DriftAlarm] = Field(default_factory=list)  # reject rate well above the budget

