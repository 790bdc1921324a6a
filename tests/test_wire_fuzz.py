"""Property tests of frame parsing (hypothesis): no input crashes the service or loses a verdict.

Directly: ``parse_header`` / ``decode_payload`` either return a well-formed header and uint8 image
within the limits, or raise ``FrameError`` with a stable code whose ERROR verdict can be serialised;
nothing else escapes. Through a live ``LineServer`` (bounded example counts): every message sent to the
inspect port gets exactly one reply, every message pushed to the frames port is either published as
one verdict or counted as dropped, and the service stays up.

Inputs: arbitrary parts, JSON of any shape (lone surrogate escapes too), near-valid headers with wrong types
and extra keys, and real raw/JPEG/PNG frames that are then truncated, bit-flipped, padded or mislabelled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from line_helpers import LOOPBACK, wait_for

from lineguard.runtime.contract import (
    ErrorCode,
    FrameError,
    FrameHeader,
    FrameLimits,
    Verdict,
    decode_payload,
    encode_frame,
    error_verdict,
    parse_header,
)
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.inspector import Inspector

LIMITS = FrameLimits(max_header_bytes=1024, max_payload_bytes=256 * 1024, max_height=160, max_width=160, min_side=8)
CTX = zmq.Context.instance()

# text that may hold lone surrogates (category Cs): JSON escapes them (\udc00), Python parses them into a str
# that no UTF-8 encoder can write; st.text() leaves them out by default
any_text = st.text(max_size=12) | st.text(st.characters(categories=["Cs", "Ll", "Nd"]), min_size=1, max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=8,
)
identifiers = st.one_of(st.text(max_size=300), st.sampled_from(["cam0", "cam1", "f1", "weave"]), json_values)
header_dicts = st.fixed_dictionaries({}, optional={
    "camera_id": identifiers,
    "frame_id": identifiers,
    "product": st.one_of(st.sampled_from(["weave", "gear"]), identifiers),
    "timestamp_ns": st.one_of(st.integers(-5, 2**70), json_values),
    "encoding": st.one_of(st.sampled_from(["raw", "jpeg", "png", "bmp"]), json_values),
    "shape": st.one_of(st.lists(st.integers(-3, 10**6), max_size=4), json_values),
    "dtype": st.sampled_from(["uint8", "float32", ""]),
    "gain": json_values,  # not a header field: refused
})
header_parts = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    header_dicts.map(lambda d: json.dumps(d).encode()),
)
MUTATIONS = ("none", "truncate", "flip", "append", "zero-pad", "lie-about-shape", "drop-shape", "extra-part",
             "swap-encoding")


@st.composite
def real_frames(draw: st.DrawFn) -> list[bytes]:
    """A frame as a camera encodes it, then possibly damaged in transit or by a buggy camera."""
    h, w = draw(st.integers(1, 180)), draw(st.integers(1, 180))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    encoding = draw(st.sampled_from(["raw", "jpeg", "png"]))
    if encoding == "jpeg" and channels == 4:
        channels = 3
    shape = (h, w) if channels is None else (h, w, channels)
    image = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, shape, dtype=np.uint8)
    header = FrameHeader(camera_id=draw(st.sampled_from(["cam0", "cam1"])), frame_id=f"f{draw(st.integers(0, 9999))}",
                         product=draw(st.sampled_from(["weave", None, "gear"])), encoding=encoding)
    head, payload = encode_frame(header, image)
    mutation = draw(st.sampled_from(MUTATIONS))
    data = bytearray(payload)
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "zero-pad":
        data += bytes(draw(st.integers(1, 80)))
    fields = json.loads(head)
    if mutation == "lie-about-shape":
        fields["shape"] = draw(st.lists(st.integers(0, 400), min_size=2, max_size=3))
    elif mutation == "drop-shape":
        fields.pop("shape")
    elif mutation == "swap-encoding":
        fields["encoding"] = draw(st.sampled_from(["raw", "jpeg", "png"]))
    parts = [json.dumps(fields).encode(), bytes(data)]
    return [*parts, b"tail"] if mutation == "extra-part" else parts


messages = st.one_of(
    st.lists(st.binary(max_size=64), max_size=4),
    st.tuples(header_parts, st.binary(max_size=2048)).map(list),
    real_frames(),
)
wire_messages = messages.filter(len)  # a ZeroMQ message has at least one part


def judge(parts: list[bytes]) -> np.ndarray | FrameError:
    """What the service does with one message: the image to inspect, or the error it answers."""
    try:
        header = parse_header(parts, LIMITS)
        return decode_payload(header, parts[1], LIMITS)
    except FrameError as exc:
        return exc


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_parsing_never_crashes_and_every_error_is_answerable(parts: list[bytes]) -> None:
    result = judge(parts)
    event(result.code.value if isinstance(result, FrameError) else "decoded")  # --hypothesis-show-statistics
    if isinstance(result, FrameError):
        assert isinstance(result.code, ErrorCode) and result.message
        assert isinstance(result.ids.camera_id, str) and len(result.ids.camera_id) <= 128
        verdict = error_verdict(result.ids, result.code, result.message, "bundle")
        assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict  # goes on the wire as is
        return
    image = result
    header = parse_header(parts, LIMITS)
    assert image.dtype == np.uint8 and image.ndim in (2, 3)
    assert image.ndim == 2 or image.shape[2] in (1, 3, 4)
    h, w = image.shape[:2]
    assert LIMITS.min_side <= min(h, w) and h <= LIMITS.max_height and w <= LIMITS.max_width
    if header.shape is not None:
        assert tuple(header.shape[:2]) == (h, w)


def test_a_well_formed_frame_round_trips() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for encoding in ("raw", "png"):
        parts = encode_frame(FrameHeader(camera_id="cam0", frame_id="f", encoding=encoding), image)
        assert np.array_equal(judge(parts), image)


# -- through a live service --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def line(enrolled_dir: Path) -> Iterator[LineServer]:
    config = LineConfig(line="fuzz", endpoints=LOOPBACK, deadline_ms=30_000, heartbeat_interval_ms=200,
                        products=["weave"], limits=LIMITS.model_dump(), batching={"max_queue_delay_ms": 1})
    with LineServer(Inspector(enrolled_dir), config) as server:
        yield server


@pytest.fixture(scope="module")
def dealer(line: LineServer) -> Iterator[zmq.Socket]:
    sock = CTX.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(line.endpoints.inspect)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def pusher(line: LineServer) -> Iterator[zmq.Socket]:
    sock = CTX.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(line.endpoints.frames)
    yield sock
    sock.close()


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=3))
def test_every_inspect_request_gets_exactly_one_reply(line: LineServer, dealer: zmq.Socket, batch) -> None:
    for parts in batch:
        dealer.send_multipart([b"", *parts])  # REQ-style delimiter: the body may hold empty parts itself
    replies = []
    for _ in batch:
        assert dealer.poll(30_000), f"{len(replies)} of {len(batch)} replies"
        empty, body = dealer.recv_multipart()
        replies.append(Verdict.model_validate_json(body))
        assert empty == b""
    assert not dealer.poll(50), "a message was answered twice"
    expected = [judge(parts) for parts in batch]
    assert sorted(r.verdict == "ERROR" for r in replies) == sorted(
        isinstance(e, FrameError) or _refused_by_line(parts) for e, parts in zip(expected, batch, strict=True))
    assert line.ready


def _refused_by_line(parts: list[bytes]) -> bool:
    """Parsed and decoded, but refused by the line's own rules: a product it does not serve, or none named
    (this line has no camera defaults and zero-shot is off, so a frame without a product cannot be judged)."""
    header = parse_header(parts, LIMITS)
    return header.product != "weave"


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_messages, min_size=1, max_size=4))
def test_every_pushed_frame_is_published_once_or_counted_dropped(line: LineServer, pusher: zmq.Socket, batch) -> None:
    before = line.frames_in, line.seq + line.dropped
    for parts in batch:
        pusher.send_multipart(parts)
    wait_for(lambda: line.frames_in == before[0] + len(batch), timeout_s=30)
    wait_for(lambda: line.seq + line.dropped >= before[1] + len(batch), timeout_s=30)
    wait_for(lambda: line.batcher.idle, timeout_s=30)
    assert line.seq + line.dropped == before[1] + len(batch)  # not one lost, not one twice
    assert line.ready
