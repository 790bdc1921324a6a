"""Messages between the panel and its browser page (lineguard.panel): the event stream and the "Why?" post."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lineguard.runtime.contract.errors import ErrorInfo
from lineguard.runtime.contract.heartbeat import Heartbeat
from lineguard.runtime.contract.messages import GridCell, VerdictClass


class _PanelModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


AlarmKind = Literal["heartbeat_missed", "gap", "restart", "error_burst", "timeout", "calibration_drift",
                    "drift_cleared"]


class FeedItem(_PanelModel):
    """One verdict as the live feed lists it."""

    camera_id: str
    frame_id: str
    product: str
    verdict: VerdictClass
    seq: int
    score: float | None
    p_value: float | None
    grid: list[GridCell]
    decided_by: str | None
    error: ErrorInfo | None
    latency_ms: float
    time: float  # wall clock (s) when the panel received it


class CameraView(_PanelModel):
    camera_id: str
    ok: int = 0
    ng: int = 0
    error: int = 0
    timeout: int = 0
    reject_rate: float | None = None  # NG / (OK + NG)
    last: FeedItem | None = None


class Alarm(_PanelModel):
    kind: AlarmKind
    message: str
    time: float


class StateMessage(_PanelModel):
    type: Literal["state"] = "state"
    connected: bool
    heartbeat: Heartbeat | None
    heartbeat_at: float | None
    cameras: list[CameraView]
    recent: list[FeedItem]
    alarms: list[Alarm]


class VerdictMessage(_PanelModel):
    type: Literal["verdict"] = "verdict"
    verdict: FeedItem
    camera: CameraView


class HeartbeatMessage(_PanelModel):
    type: Literal["heartbeat"] = "heartbeat"
    heartbeat: Heartbeat
    received_at: float


class AlarmMessage(_PanelModel):
    type: Literal["alarm"] = "alarm"
    alarm: Alarm


PanelMessage = StateMessage | VerdictMessage | HeartbeatMessage | AlarmMessage


class ExplainAsk(_PanelModel):
    """What the page posts to /api/explain."""

    frame_id: str = Field(min_length=1, max_length=256)
    question: str | None = Field(None, max_length=500)
    follow_up: bool = Field(False, description="continue the frame's conversation")
