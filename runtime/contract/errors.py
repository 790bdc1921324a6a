"""Every error code lineguard puts on the wire, in one enum, and the ``ErrorInfo`` that carries it.

Frame codes answer a frame with an ERROR verdict (``Verdict.error``); explanation codes end an
explanation with an ``error`` reply (``ExplainReply.error``). Integrations match on the strings.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    """Stable codes of ERROR verdicts and explanation errors (``ErrorInfo.code``). Integrations match on these strings."""

    BAD_HEADER = "BAD_HEADER"  # header is not JSON / not a FrameHeader (unknown field, wrong type, ...)
    BAD_PARTS = "BAD_PARTS"  # not exactly [header, payload]
    BAD_SHAPE = "BAD_SHAPE"  # shape impossible, too small, or not what the payload holds
    BAD_PAYLOAD = "BAD_PAYLOAD"  # jpeg/png corrupt or truncated, or not 8-bit
    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"  # product not enrolled in the bundle / not served on this line
    OVERSIZE = "OVERSIZE"  # header, payload or image dimensions beyond the line's limits
    OVERLOADED = "OVERLOADED"  # the queue was full: the frame was refused without inspection
    INTERNAL = "INTERNAL"  # inference failed (the service keeps running)
    SHUTTING_DOWN = "SHUTTING_DOWN"  # arrived while the service was draining
    WORKER_FAILED = "WORKER_FAILED"  # the inference worker died mid-batch; a replacement took over
    CAMERA_NOT_ALLOWED = "CAMERA_NOT_ALLOWED"  # the sender's CURVE key may not speak for this camera
    # explanation replies (OVERSIZE too: a question beyond the line's max_question_chars)
    BAD_REQUEST = "BAD_REQUEST"  # not an ExplainRequest
    UNKNOWN_FRAME = "UNKNOWN_FRAME"  # no archived NG frame with this id (or it has aged out)
    BUSY = "BUSY"  # the LLM is answering as many questions as the line allows
    LLM_FAILED = "LLM_FAILED"  # the model process failed or died; ask again
    TIMEOUT = "TIMEOUT"  # the model said nothing for the client's idle timeout (panel relay)


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
