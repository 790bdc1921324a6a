"""The frame side of the wire protocol: what cameras send, how the service reads it, how it says no.

Usage::

    import numpy as np, zmq
    from lineguard.runtime.contract import FrameHeader, FrameLimits, decode_frame, encode_frame

    image = np.zeros((480, 640, 3), np.uint8)
    header = FrameHeader(camera_id="cam0", frame_id="f1", product="tile", timestamp_ns=0,
                         encoding="raw", shape=image.shape)
    parts = encode_frame(header, image)            # [header JSON, payload]: one multipart message
    header, pixels = decode_frame(parts, FrameLimits())
    # a server reads `socket.recv_multipart(copy=False)`; raw pixels then stay in ZeroMQ's buffer

A frame is the multipart message ``[header JSON, payload]``. ``encoding`` is ``raw`` (C-order uint8
pixels of ``shape``: (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA), ``jpeg`` or ``png`` (``shape``
optional; when given, its height and width must match the decoded image). Everything wrong with a frame
raises :class:`FrameError` carrying a stable :class:`ErrorCode` and whatever identifiers could be read,
so the service can still address an ERROR verdict to the frame's camera.

Reading is split in two so the socket loop only does the cheap part: :func:`parse_header` (part count,
sizes, header JSON, declared shape against the raw payload) and :func:`decode_payload` (``np.frombuffer``
/ ``cv2.imdecode`` with the checks only the encoded stream can answer).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineguard.runtime.contract.errors import ErrorCode, ErrorInfo
from lineguard.runtime.contract.messages import Verdict

Encoding = Literal["raw", "jpeg", "png"]
Part = zmq.Frame | bytes | bytearray | memoryview

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...); C4/C8/CC are not frames
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameLimits(BaseModel):
    """What one frame may cost the service; anything beyond is refused with OVERSIZE."""

    model_config = ConfigDict(extra="forbid")

    max_header_bytes: int = Field(4096, gt=0)
    max_payload_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_height: int = Field(8192, gt=0)
    max_width: int = Field(8192, gt=0)
    min_side: int = Field(8, ge=8, description="smaller images cannot be inspected (BAD_SHAPE); the inspector "
                          "needs at least 8 px a side (runtime.inference.preprocess), so no lower value")


class FrameHeader(BaseModel):
    """First part of a frame message. Unknown fields are refused (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")

    camera_id: str = Field(min_length=1, max_length=128)
    frame_id: str = Field(min_length=1, max_length=256)
    product: str | None = Field(None, description="enrolled product; None: the camera's default or zero-shot")
    timestamp_ns: int = Field(0, ge=0, description="capture time on the camera's clock (informational)")
    encoding: Encoding = "raw"
    shape: tuple[int, ...] | None = Field(None, description="(H, W) or (H, W, C); required for raw")
    dtype: Literal["uint8"] = "uint8"


@dataclass(frozen=True)
class FrameIds:
    """The identifiers of a frame, as far as they could be read."""

    camera_id: str = ""
    frame_id: str = ""
    product: str = ""

    @property
    def addressable(self) -> bool:
        """An ERROR verdict can be published: its camera names the PUB topic."""
        return bool(self.camera_id)


class FrameError(ValueError):
    """A frame the service cannot inspect. ``ids`` holds what could be read; ``header`` when it parsed."""

    def __init__(self, code: ErrorCode, message: str, ids: FrameIds | FrameHeader | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.header = ids if isinstance(ids, FrameHeader) else None
        if isinstance(ids, FrameHeader):
            ids = FrameIds(ids.camera_id, ids.frame_id, ids.product or "")
        self.ids = ids or FrameIds()


def error_verdict(ids: FrameIds | FrameHeader, code: ErrorCode, message: str, bundle_id: str = "") -> Verdict:
    """The ERROR verdict the service answers a refused frame with."""
    if isinstance(ids, FrameHeader):
        ids = FrameIds(ids.camera_id, ids.frame_id, ids.product or "")
    return Verdict(frame_id=ids.frame_id, camera_id=ids.camera_id, product=ids.product, verdict="ERROR",
                   bundle_id=bundle_id, error=ErrorInfo(code=code, message=message))


# -- the PUB side ----------------------------------------------------------------------------------


# -- client side ------------------------------------------------------------------------------------

def encode_frame(header: FrameHeader, image: np.ndarray, quality: int = 90) -> list[bytes]:
    """Build the ``[header JSON, payload]`` message for ``image`` (uint8, BGR) in ``header.encoding``.

    ``header.shape`` is filled in from the image; the returned header part is what goes on the wire.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"frames carry uint8 pixels, got {image.dtype}")
    header = header.model_copy(update={"shape": tuple(int(s) for s in image.shape)})
    if header.encoding == "raw":
        payload = np.ascontiguousarray(image).tobytes()
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if header.encoding == "jpeg" else []
        ok, buf = cv2.imencode(".jpg" if header.encoding == "jpeg" else ".png", image, params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {image.shape} image as {header.encoding}")
        payload = buf.tobytes()
    return [header.model_dump_json(exclude_none=True).encode(), payload]


def new_header(camera_id: str, frame_id: str, product: str | None, encoding: Encoding = "raw") -> FrameHeader:
    """A header stamped with the current wall-clock time."""
    return FrameHeader(camera_id=camera_id, frame_id=frame_id, product=product,
                       timestamp_ns=time.time_ns(), encoding=encoding)


# -- server side ------------------------------------------------------------------------------------

def _buffer(part: Part) -> memoryview:
    return part.buffer if isinstance(part, zmq.Frame) else memoryview(part)


def _partial_ids(raw: Any) -> FrameIds:
    """Identifiers from a header that did not validate, when they are usable strings."""
    if not isinstance(raw, dict):
        return FrameIds()

    def text(key: str, limit: int) -> str:
        value = raw.get(key)
        return value if isinstance(value, str) and 0 < len(value) <= limit and _is_unicode(value) else ""

    return FrameIds(text("camera_id", 128), text("frame_id", 256), text("product", 256))


def _is_unicode(value: Any) -> bool:
    """Whether ``value`` (parsed JSON) is text a verdict can carry: JSON may escape a lone surrogate
    (``"\\udc00"``), which parses into a str that no UTF-8 encoder, and so no reply, can write."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'header'}: {e['msg']}" for e in error.errors())


def parse_header(parts: Sequence[Part], limits: FrameLimits) -> FrameHeader:
    """The cheap checks, fit for the socket loop: part count, sizes and the header itself."""
    if not parts:
        raise FrameError(ErrorCode.BAD_PARTS, "empty message")
    head = _buffer(parts[0])
    if head.nbytes > limits.max_header_bytes:
        raise FrameError(ErrorCode.OVERSIZE, f"header of {head.nbytes} bytes exceeds {limits.max_header_bytes}")
    try:
        raw = json.loads(head.tobytes())
    except (UnicodeDecodeError, ValueError) as exc:
        if len(parts) != 2:
            raise FrameError(ErrorCode.BAD_PARTS, f"expected [header, payload], got {len(parts)} parts") from exc
        raise FrameError(ErrorCode.BAD_HEADER, f"header is not JSON: {exc}") from exc
    ids = _partial_ids(raw)
    if len(parts) != 2:
        raise FrameError(ErrorCode.BAD_PARTS, f"expected [header, payload], got {len(parts)} parts", ids)
    if not _is_unicode(raw):  # before validation: its messages would quote the bad key or value
        raise FrameError(ErrorCode.BAD_HEADER, "header holds a lone surrogate escape (\\ud800-\\udfff): not "
                         "Unicode text", ids)
    try:
        header = FrameHeader.model_validate(raw)
    except ValidationError as exc:
        shape_only = all(e["loc"] and e["loc"][0] == "shape" for e in exc.errors())
        code = ErrorCode.BAD_SHAPE if shape_only else ErrorCode.BAD_HEADER
        raise FrameError(code, _describe(exc), ids) from exc
    size = _buffer(parts[1]).nbytes
    if size > limits.max_payload_bytes:
        raise FrameError(ErrorCode.OVERSIZE, f"payload of {size} bytes exceeds {limits.max_payload_bytes}", header)
    if size == 0:
        raise FrameError(ErrorCode.BAD_PAYLOAD, "empty payload", header)
    if header.encoding == "raw":
        _check_raw(header, size, limits)
    elif header.shape is not None:
        _check_shape(header, header.shape, limits)
    return header


def _check_raw(header: FrameHeader, size: int, limits: FrameLimits) -> None:
    if header.shape is None:
        raise FrameError(ErrorCode.BAD_SHAPE, "raw frames need a shape", header)
    _check_shape(header, header.shape, limits)
    expected = math.prod(header.shape)
    if size != expected:
        raise FrameError(ErrorCode.BAD_SHAPE,
                         f"shape {header.shape} needs {expected} bytes, the payload has {size}", header)


def _check_shape(header: FrameHeader, shape: Sequence[int], limits: FrameLimits) -> None:
    ok_channels = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))
    if not ok_channels:
        raise FrameError(ErrorCode.BAD_SHAPE, f"shape {tuple(shape)} is not (H, W) or (H, W, 1|3|4)", header)
    h, w = shape[0], shape[1]
    if h > limits.max_height or w > limits.max_width:
        raise FrameError(ErrorCode.OVERSIZE,
                         f"image {h}x{w} exceeds the line's limit {limits.max_height}x{limits.max_width}", header)
    if min(h, w) < limits.min_side:
        raise FrameError(ErrorCode.BAD_SHAPE, f"image {h}x{w} is smaller than {limits.min_side} px a side",
                         header)


def _png_size(data: memoryview) -> tuple[int, int] | None:
    if data.nbytes < 24 or data[:8].tobytes() != PNG_MAGIC or data[12:16].tobytes() != b"IHDR":
        return None
    width = int.from_bytes(data[16:20].tobytes(), "big")
    height = int.from_bytes(data[20:24].tobytes(), "big")
    return height, width


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """Height and width from the JPEG's start-of-frame segment, without decoding it."""
    if data.nbytes < 4 or data[:2].tobytes() != JPEG_MAGIC:
        return None
    i, n = 2, data.nbytes
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4].tobytes(), "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 5 : i + 7].tobytes(), "big"), int.from_bytes(data[i + 7 : i + 9].tobytes(), "big")
        if marker == 0xDA:  # scan data before any frame header
            return None
        i += 2 + length
    return None


def _complete(data: memoryview, encoding: Encoding) -> bool:
    """The stream ends where the format says it ends (JPEG EOI; PNG IEND), allowing zero padding."""
    tail = data[-64:].tobytes().rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9") if encoding == "jpeg" else tail.endswith(b"IEND\xaeB`\x82")


def decode_payload(header: FrameHeader, payload: Part, limits: FrameLimits) -> np.ndarray:
    """Pixels of a frame whose header passed :func:`parse_header`: uint8 (H, W) or (H, W, C), BGR order.

    Raw payloads are viewed in place (``np.frombuffer`` over the ZeroMQ frame: no copy; the array keeps
    the frame alive). jpeg/png sizes are read from the stream and checked against the limits before
    anything is decoded, so a small file cannot expand into a huge image.
    """
    data = _buffer(payload)
    if header.encoding == "raw":
        _check_raw(header, data.nbytes, limits)
        return np.frombuffer(data, dtype=np.uint8).reshape(header.shape)
    size = _jpeg_size(data) if header.encoding == "jpeg" else _png_size(data)
    if size is None:
        raise FrameError(ErrorCode.BAD_PAYLOAD, f"payload is not a readable {header.encoding} stream", header)
    _check_shape(header, size, limits)
    if not _complete(data, header.encoding):
        raise FrameError(ErrorCode.BAD_PAYLOAD, f"{header.encoding} stream is truncated", header)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise FrameError(ErrorCode.BAD_PAYLOAD, f"{header.encoding} stream is corrupt", header)
    if header.shape is not None and tuple(header.shape[:2]) != image.shape[:2]:
        raise FrameError(ErrorCode.BAD_SHAPE,
                         f"header says {tuple(header.shape[:2])}, the {header.encoding} is {image.shape[:2]}", header)
    return image


def decode_frame(parts: Sequence[Part], limits: FrameLimits | None = None) -> tuple[FrameHeader, np.ndarray]:
    """Header and pixels of one ``[header JSON, payload]`` message; raises :class:`FrameError`."""
    limits = limits or FrameLimits()
    header = parse_header(parts, limits)
    return header, decode_payload(header, parts[1], limits)
