"""The contract: every message lineguard puts on a wire or an HTTP endpoint, and the one ``ErrorCode``.

Import from here, not from the submodules::

    from lineguard.runtime.contract import ErrorCode, FrameHeader, Heartbeat, Verdict, encode_frame

- :mod:`.errors`     ``ErrorCode`` (frame and explanation codes) and ``ErrorInfo``
- :mod:`.messages`   ``Verdict`` and its parts, readiness, explanation requests and replies
- :mod:`.frames`     ``FrameHeader``, ``FrameLimits`` and the frame codec cameras and the service share
- :mod:`.heartbeat`  the PUB topics, ``Heartbeat``, lifetime ``Totals``, calibration-drift windows
- :mod:`.panel`      what the panel page receives

Imports only pydantic, numpy, OpenCV and pyzmq: every other runtime package may import it.
"""

from lineguard.runtime.contract.errors import (
    ErrorCode,
    ErrorInfo,
)
from lineguard.runtime.contract.frames import (
    Encoding,
    FrameError,
    FrameHeader,
    FrameIds,
    FrameLimits,
    Part,
    decode_frame,
    decode_payload,
    encode_frame,
    error_verdict,
    new_header,
    parse_header,
)
from lineguard.runtime.contract.heartbeat import (
    HEARTBEAT_TOPIC,
    BootRecord,
    DriftAlarm,
    DriftWindow,
    Heartbeat,
    Totals,
    describe_alarm,
    verdict_topic,
)
from lineguard.runtime.contract.messages import (
    QUESTION_CHARS_CAP,
    ArchivedVerdict,
    CalibrationStatus,
    Change,
    DecisionMode,
    ExplainReply,
    ExplainRequest,
    GridCell,
    HueDirection,
    ImageEvidence,
    KindCertainty,
    LatencyBreakdown,
    Readiness,
    Region,
    RegionEvidence,
    Shape,
    Verdict,
    VerdictClass,
)
from lineguard.runtime.contract.panel import (
    Alarm,
    AlarmKind,
    AlarmMessage,
    CameraView,
    ExplainAsk,
    FeedItem,
    HeartbeatMessage,
    PanelMessage,
    StateMessage,
    VerdictMessage,
)

__all__ = [
    "ExplainAsk",
    "Alarm",
    "AlarmKind",
    "AlarmMessage",
    "ArchivedVerdict",
    "BootRecord",
    "CalibrationStatus",
    "CameraView",
    "Change",
    "DecisionMode",
    "DriftAlarm",
    "DriftWindow",
    "Encoding",
    "ErrorCode",
    "ErrorInfo",
    "ExplainReply",
    "ExplainRequest",
    "FeedItem",
    "FrameError",
    "FrameHeader",
    "FrameIds",
    "FrameLimits",
    "GridCell",
    "HEARTBEAT_TOPIC",
    "Heartbeat",
    "HeartbeatMessage",
    "HueDirection",
    "ImageEvidence",
    "KindCertainty",
    "LatencyBreakdown",
    "PanelMessage",
    "Part",
    "QUESTION_CHARS_CAP",
    "Readiness",
    "Region",
    "RegionEvidence",
    "Shape",
    "StateMessage",
    "Totals",
    "Verdict",
    "VerdictClass",
    "VerdictMessage",
    "decode_frame",
    "decode_payload",
    "encode_frame",
    "error_verdict",
    "new_header",
    "parse_header",
    "describe_alarm",
    "verdict_topic",
]
