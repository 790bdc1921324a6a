"""Messages lineguard puts on the wire or returns from its API. Every one is a pydantic model.

Usage::

    verdict = Verdict(frame_id="f1", camera_id="cam0", product="tile", verdict="NG", ...)
    wire = verdict.model_dump_json()
    Verdict.model_validate_json(wire)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lineguard.runtime.contract.errors import ErrorInfo

GridCell = Literal[
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
]
VerdictClass = Literal["OK", "NG", "ERROR", "TIMEOUT"]
DecisionMode = Literal["zero-shot", "few-shot", "llm"]
# How far a verdict's p-value can be trusted (lineguard.runtime.scoring.calibration):
#   conformal     rank among held-out calibration normals; their count resolves the line's budget
#   tail          too few calibration normals to resolve the budget: the predictive Gumbel tail of their
#                 scores decides beyond the largest one (lineguard.runtime.scoring.gumbel_tail; validated by
#                 `lineguard eval`, see README "How the budget works")
#   provisional   no (or too few) held-out calibration images: p from augmented views of the shots,
#                 known to over-reject on real photos; enrol or calibrate with more normals
#   uncalibrated  zero-shot: the decoder's own decision, no product normals behind it
CalibrationStatus = Literal["conformal", "tail", "provisional", "uncalibrated"]
QUESTION_CHARS_CAP = 4000  # the longest explanation question any line may allow (explanations.max_question_chars)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


Change = Literal["lower", "higher", "unchanged"]
Shape = Literal["elongated", "compact", "diffuse"]
HueDirection = Literal["none", "redder", "greener", "yellower", "bluer"]
KindCertainty = Literal["likely", "possibly"]


class RegionEvidence(_Message):
    """What a region looks like next to the product's enrolled normals, measured (lineguard.runtime.scoring.region_evidence).

    "sigma" figures are in units of normal variation: how much the same place varies among the enrolment
    views. Appearance fields are None where the product was enrolled before normal statistics existed.
    """

    brightness: Change | None = Field(None, description="lower: darker than the normals there; higher: brighter")
    grey_delta: float | None = Field(None, description="mean grey level of the region's core minus the normals' (0-255)")
    grey_delta_sigma: float | None = None
    hue_direction: HueDirection | None = Field(None, description="dominant colour shift (Lab a/b) when beyond normal variation")
    colour_shift: float | None = Field(None, description="chroma shift, Lab a/b units")
    colour_shift_sigma: float | None = None
    texture: Change | None = Field(None, description="local contrast (std of grey in 7x7 windows) against the normals")
    contrast_ratio: float | None = None
    contrast_sigma: float | None = None
    edges: Change | None = Field(None, description="edge content (Sobel magnitude) against the normals")
    edge_ratio: float | None = None
    shape: Shape = Field(description="elongated and thin: scratch/crack-like; compact: spot/hole/inclusion; "
                         "diffuse: stain/discoloration/texture change")
    shape_from: Literal["core", "map"] = Field(description="core: the pixels that deviate from their surroundings; "
                                               "map: no clear core, the anomaly map's region")
    elongation: float = Field(ge=1.0, description="major/minor axis ratio of the measured shape")
    solidity: float = Field(ge=0.0, le=1.0, description="area / convex hull area of the measured shape")
    area_px: int = Field(ge=0, description="anomalous area in the original image's pixels")
    area_percent: float = Field(ge=0.0, le=100.0)
    length_px: float = Field(ge=0.0, description="length of the measured shape, original pixels")
    width_px: float = Field(ge=0.0, description="mean width of the measured shape, original pixels")
    length_mm: float | None = Field(None, description="with the camera's mm_per_pixel (line config)")
    width_mm: float | None = None
    area_mm2: float | None = None
    peak_vs_normals: float | None = Field(None, description="region peak / the largest image score among the "
                                          "calibration normals (>1: beyond every normal seen)")
    normals_compared: int = Field(0, ge=0, description="normal images behind peak_vs_normals")
    likely_kind: str = Field(description="the defect class the shape and intensity evidence point to")
    kind_certainty: KindCertainty


class Region(_Message):
    """One connected anomalous region, located on the 3x3 grid of the image."""

    grid: GridCell
    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height in the original image's pixels")
    area_fraction: float = Field(ge=0.0, le=1.0, description="share of the image this region covers")
    peak: float = Field(description="highest fused anomaly score inside the region")
    evidence: RegionEvidence | None = Field(None, description="measured against the enrolled normals (few-shot)")


class ImageEvidence(_Message):
    """Evidence for the LLM verdict, measured the same way on every frame whatever the vision verdict:
    the frame's strongest deviation (the anomaly map's top candidate region) against the normals."""

    score_vs_normals: float | None = Field(None, description="image score / the largest among the calibration normals")
    normals_compared: int = 0
    candidates: int = Field(ge=0, description="separate areas scoring at least 60% of the frame's peak")
    top: Region | None = None


class LatencyBreakdown(_Message):
    decode: float = 0.0
    preprocess: float = 0.0
    encoder: float = 0.0
    decoder: float = 0.0
    scoring: float = 0.0
    total: float = 0.0


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
    follow_up: bool = Field(False, description="continue this frame's conversation: its earlier questions and "
                            "answers go to the model with this one (false: a new conversation)")


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
