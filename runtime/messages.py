"""Messages lineguard puts on the wire or returns from its API. Every one is a pydantic model.

Usage::

    verdict = Verdict(frame_id="f1", camera_id="cam0", product="tile", verdict="NG", ...)
    wire = verdict.model_dump_json()
    Verdict.model_validate_json(wire)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GridCell = Literal[
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
]
VerdictClass = Literal["OK", "NG", "ERROR", "TIMEOUT"]
DecisionMode = Literal["zero-shot", "few-shot", "llm"]
# How far a verdict's p-value can be trusted (lineguard.runtime.calibration):
#   conformal     rank among held-out calibration normals; their count resolves the line's budget
#   tail          too few calibration normals to resolve the budget: a Gumbel tail fitted to them decides
#                 beyond the largest one (validated by `lineguard eval`, see README "How the budget works")
#   provisional   no (or too few) held-out calibration images: p from augmented views of the shots,
#                 known to over-reject on real photos; enrol or calibrate with more normals
#   uncalibrated  zero-shot: the decoder's own decision, no product normals behind it
CalibrationStatus = Literal["conformal", "tail", "provisional", "uncalibrated"]
QUESTION_CHARS_CAP = 4000  # the longest explanation question any line may allow (explanations.max_question_chars)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Region(_Message):
    """One connected anomalous region, located on the 3x3 grid of the image."""

    grid: GridCell
    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height in the original image's pixels")
    area_fraction: float = Field(ge=0.0, le=1.0, description="share of the image this region covers")
    peak: float = Field(description="highest fused anomaly score inside the region")


class LatencyBreakdown(_Message):
    decode: float = 0.0
    preprocess: float = 0.0
    encoder: float = 0.0
    decoder: float = 0.0
    scoring: float = 0.0
    total: float = 0.0


class ErrorInfo(_Message):
    code: str
    message: str


class Verdict(_Message):
    frame_id: str = ""
    camera_id: str = ""
    product: str
    seq: int = 0
    verdict: VerdictClass
    decided_by: DecisionMode | None = None
    score: float | None = None
    p_value: float | None = None
    calibration: CalibrationStatus | None = None
    regions: list[Region] = Field(default_factory=list)
    latency_ms: LatencyBreakdown = Field(default_factory=LatencyBreakdown)
    bundle_id: str = ""
    error: ErrorInfo | None = None


class ArchivedVerdict(Verdict):
    """A verdict kept in the NG archive, with when it was stored (the runtime's ``GET /api/frames``)."""

    archived_at: float = Field(description="Unix seconds")


class Readiness(_Message):
    """``GET /readyz``: ready only when every named check is."""

    ready: bool
    checks: dict[str, bool]


class ExplainRequest(_Message):
    """Explanation port (ROUTER, DEALER clients): explain an archived frame."""

    frame_id: str = Field(min_length=1, max_length=256)
    question: str | None = Field(None, max_length=QUESTION_CHARS_CAP)  # the line sets a lower limit
    cancel: bool = Field(False, description="stop this client's answer about frame_id; it ends with a final "
                         "reply whose finish_reason is 'cancelled'")


class ExplainReply(_Message):
    """Streamed back for one request: ``chunk`` messages, then one ``final`` (or one ``error``)."""

    type: Literal["chunk", "final", "error"]
    frame_id: str
    text: str = ""
    error: ErrorInfo | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_ms: float | None = None
    total_ms: float | None = None
    finish_reason: str | None = None
