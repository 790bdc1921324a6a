"""Frames on the wire: round trips, zero-copy raw decoding, and the right ErrorCode for every bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import zmq
from pydantic import ValidationError

from lineguard.runtime.contract import (
    ErrorCode,
    ErrorInfo,
    FrameError,
    FrameHeader,
    FrameLimits,
    decode_frame,
    decode_payload,
    encode_frame,
    error_verdict,
    parse_header,
)

RNG = np.random.default_rng(0)
IMAGE = cv2.GaussianBlur(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8), (9, 9), 3)  # JPEG-friendly
LIMITS = FrameLimits(max_header_bytes=512, max_payload_bytes=200_000, max_height=1000, max_width=1000)


def header(**overrides: object) -> dict:
    fields = {"camera_id": "cam0", "frame_id": "f1", "product": "tile", "timestamp_ns": 1, "encoding": "raw",
              "shape": list(IMAGE.shape), "dtype": "uint8"}
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


def message(head: dict | bytes, payload: bytes | None = None) -> list[bytes]:
    head_bytes = head if isinstance(head, bytes) else json.dumps(head).encode()
    return [head_bytes, IMAGE.tobytes() if payload is None else payload]


def encoded(ext: str, image: np.ndarray = IMAGE) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def jpeg_with_size(height: int, width: int) -> bytes:
    """A real JPEG whose start-of-frame segment claims another size (a decompression bomb's trick)."""
    data = bytearray(encoded(".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png_with_size(height: int, width: int) -> bytes:
    data = bytearray(encoded(".png"))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("encoding", ["raw", "jpeg", "png"])
def test_round_trip(encoding: str) -> None:
    parts = encode_frame(FrameHeader(camera_id="c", frame_id="1", product="p", encoding=encoding), IMAGE)
    head, pixels = decode_frame(parts, LIMITS)
    assert (head.camera_id, head.frame_id, head.product, head.shape) == ("c", "1", "p", IMAGE.shape)
    assert pixels.shape == IMAGE.shape and pixels.dtype == np.uint8
    if encoding == "jpeg":
        assert np.abs(pixels.astype(int) - IMAGE).mean() < 8
    else:
        assert np.array_equal(pixels, IMAGE)


def test_grayscale_and_bgra_raw() -> None:
    for image in (IMAGE[:, :, 0], np.dstack([IMAGE, IMAGE[:, :, :1]])):
        _, pixels = decode_frame(encode_frame(FrameHeader(camera_id="c", frame_id="1"), image), LIMITS)
        assert np.array_equal(pixels, image)


def test_raw_payload_is_viewed_in_the_zmq_frame_not_copied() -> None:
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.PAIR) as a, ctx.socket(zmq.PAIR) as b:
        a.bind("inproc://wire-zero-copy")
        b.connect("inproc://wire-zero-copy")
        a.send_multipart(encode_frame(FrameHeader(camera_id="c", frame_id="1"), IMAGE))
        assert b.poll(2000)
        parts = b.recv_multipart(copy=False)
    _, pixels = decode_frame(parts, LIMITS)
    in_frame = np.frombuffer(parts[1].buffer, np.uint8)
    assert np.shares_memory(pixels, in_frame)
    assert np.array_equal(pixels, IMAGE)
    payload = IMAGE.tobytes()  # plain bytes are viewed too
    assert np.shares_memory(decode_payload(parse_header(message(header(), payload), LIMITS), payload, LIMITS),
                            np.frombuffer(payload, np.uint8))


BAD_INPUTS = {
    "no parts": ([], ErrorCode.BAD_PARTS, ""),
    "header only": ([json.dumps(header()).encode()], ErrorCode.BAD_PARTS, "cam0"),
    "three parts": ([*message(header()), b"x"], ErrorCode.BAD_PARTS, "cam0"),
    "not json": (message(b"\x00\xffnot json"), ErrorCode.BAD_HEADER, ""),
    "json list": (message(b"[1, 2]"), ErrorCode.BAD_HEADER, ""),
    "no frame_id": (message(header(frame_id=None)), ErrorCode.BAD_HEADER, "cam0"),
    "unknown field": (message({**header(), "exposure": 3}), ErrorCode.BAD_HEADER, "cam0"),
    "float pixels": (message(header(dtype="float32")), ErrorCode.BAD_HEADER, "cam0"),
    "unknown encoding": (message(header(encoding="bmp")), ErrorCode.BAD_HEADER, "cam0"),
    "shape not ints": (message(header(shape=["tall", "wide"])), ErrorCode.BAD_SHAPE, "cam0"),
    "two channels": (message(header(shape=[48, 64, 2]), IMAGE[:, :, :2].tobytes()), ErrorCode.BAD_SHAPE, "cam0"),
    "four dims": (message(header(shape=[1, 48, 64, 3])), ErrorCode.BAD_SHAPE, "cam0"),
    "raw without shape": (message(header(shape=None)), ErrorCode.BAD_SHAPE, "cam0"),
    "raw truncated": (message(header(), IMAGE.tobytes()[:-10]), ErrorCode.BAD_SHAPE, "cam0"),
    "too small": (message(header(shape=[4, 4, 3]), bytes(48)), ErrorCode.BAD_SHAPE, "cam0"),
    "negative shape": (message(header(shape=[-48, 64, 3])), ErrorCode.BAD_SHAPE, "cam0"),
    "header too big": (message({**header(), "frame_id": "x" * 600}), ErrorCode.OVERSIZE, ""),
    "payload too big": (message(header(shape=[500, 500]), bytes(250_000)), ErrorCode.OVERSIZE, "cam0"),
    "raw too tall": (message(header(shape=[2000, 10]), bytes(20_000)), ErrorCode.OVERSIZE, "cam0"),
    "jpeg bomb": (message(header(encoding="jpeg", shape=None), jpeg_with_size(60000, 60000)), ErrorCode.OVERSIZE, "cam0"),
    "png bomb": (message(header(encoding="png", shape=None), png_with_size(100000, 100000)), ErrorCode.OVERSIZE, "cam0"),
    "jpeg truncated": (message(header(encoding="jpeg"), encoded(".jpg")[:300]), ErrorCode.BAD_PAYLOAD, "cam0"),
    "png truncated": (message(header(encoding="png"), encoded(".png")[:-40]), ErrorCode.BAD_PAYLOAD, "cam0"),
    "jpeg garbage": (message(header(encoding="jpeg"), b"\xff\xd8" + bytes(RNG.integers(0, 256, 500, dtype=np.uint8))),
                     ErrorCode.BAD_PAYLOAD, "cam0"),
    "png is a jpeg": (message(header(encoding="png"), encoded(".jpg")), ErrorCode.BAD_PAYLOAD, "cam0"),
    "corrupt jpeg body": (message(header(encoding="jpeg"), encoded(".jpg")[:200] + bytes(2000) + b"\xff\xd9"),
                          ErrorCode.BAD_PAYLOAD, "cam0"),
    "empty payload": (message(header(), b""), ErrorCode.BAD_PAYLOAD, "cam0"),
    # JSON may escape a lone surrogate: valid JSON, but no verdict could carry it back
    "surrogate frame_id": (message(json.dumps(header(frame_id="f\udc00")).encode()), ErrorCode.BAD_HEADER, "cam0"),
    "surrogate key": (message(json.dumps({**header(), "\ud800": 1}).encode()), ErrorCode.BAD_HEADER, "cam0"),
    "jpeg not the declared size": (message(header(encoding="jpeg", shape=[64, 48, 3]), encoded(".jpg")),
                                   ErrorCode.BAD_SHAPE, "cam0"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_its_code(name: str) -> None:
    parts, code, camera = BAD_INPUTS[name]
    with pytest.raises(FrameError) as caught:
        decode_frame(parts, LIMITS)
    assert caught.value.code == code, caught.value
    assert caught.value.ids.camera_id == camera
    assert caught.value.ids.addressable == bool(camera)


def test_cheap_checks_happen_in_parse_header() -> None:
    """The socket loop only parses headers: raw size problems must surface there, not in a worker."""
    with pytest.raises(FrameError) as caught:
        parse_header(message(header(), IMAGE.tobytes()[:-1]), LIMITS)
    assert caught.value.code == ErrorCode.BAD_SHAPE
    truncated = message(header(encoding="jpeg"), encoded(".jpg")[:300])
    head = parse_header(truncated, LIMITS)  # the stream itself is only read by decode_payload
    with pytest.raises(FrameError, match="truncated"):
        decode_payload(head, truncated[1], LIMITS)


def test_a_line_cannot_admit_frames_the_inspector_refuses() -> None:
    with pytest.raises(ValueError, match="min_side"):
        FrameLimits(min_side=4)  # the inspector needs 8 px a side: below that, admitted frames would fail inference


def test_error_verdict_carries_code_and_ids() -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(message(header(), b"xx"), LIMITS)
    verdict = error_verdict(caught.value.ids, caught.value.code, caught.value.message, "b1")
    assert (verdict.verdict, verdict.camera_id, verdict.frame_id, verdict.product) == ("ERROR", "cam0", "f1", "tile")
    assert verdict.error.code == "BAD_SHAPE" and "bytes" in verdict.error.message


def test_error_codes_are_stable() -> None:
    assert [c.value for c in ErrorCode] == [
        "BAD_HEADER", "BAD_PARTS", "BAD_SHAPE", "BAD_PAYLOAD", "UNKNOWN_PRODUCT", "OVERSIZE", "OVERLOADED",
        "INTERNAL", "SHUTTING_DOWN", "WORKER_FAILED", "CAMERA_NOT_ALLOWED",
        "BAD_REQUEST", "UNKNOWN_FRAME", "BUSY", "LLM_FAILED", "TIMEOUT",  # explanation replies
    ]
    assert ErrorCode.OVERSIZE == "OVERSIZE" and f"{ErrorCode.OVERSIZE}" == "OVERSIZE"  # formats as its value


def test_error_info_takes_only_known_codes() -> None:
    """Every code on the wire is an ErrorCode: a typo is a validation error, not a new code PLCs never match."""
    info = ErrorInfo.model_validate_json('{"code": "BAD_HEADER", "message": "m"}')
    assert info.code is ErrorCode.BAD_HEADER and info.model_dump_json() == '{"code":"BAD_HEADER","message":"m"}'
    with pytest.raises(ValidationError):
        ErrorInfo(code="BAD_HEDAER", message="m")


def test_a_verdict_with_text_no_encoder_can_write_still_goes_out() -> None:
    """Defence behind the header check: the publisher writes such text as "?" rather than losing the verdict."""
    from lineguard.runtime.contract import Verdict
    from lineguard.runtime.line.publisher import wire_json

    sent = Verdict.model_validate_json(wire_json(Verdict(frame_id="f\udc00", product="p", verdict="OK")))
    assert (sent.frame_id, sent.verdict) == ("f?", "OK")
