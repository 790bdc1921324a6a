"""The line service on loopback with the real bundle: one verdict per frame, whatever comes in.

Every receive is bounded by a timeout; servers bind ``tcp://127.0.0.1:*`` (a free port each).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from line_helpers import LOOPBACK, frame, header_json, inspect_frames, until, verdicts_of, wait_for, watch

from lineguard.runtime.contract import Verdict, encode_frame
from lineguard.runtime.line.assembly import ServerError
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.inspector import Inspector

CTX = zmq.Context.instance()


@pytest.fixture(scope="module")
def inspector(enrolled_dir: Path) -> Inspector:
    return Inspector(enrolled_dir)


@pytest.fixture
def serve(inspector: Inspector) -> Iterator[Callable[..., LineServer]]:
    servers: list[LineServer] = []
    sockets: list[zmq.Socket] = []

    def start(**options: object) -> LineServer:
        fields = {"line": "l1", "endpoints": LOOPBACK, "deadline_ms": 30_000, "heartbeat_interval_ms": 100,
                  "products": ["weave"], **options}
        server = LineServer(inspector, LineConfig(**fields)).start(timeout_s=60)
        servers.append(server)
        return server

    start.sockets = sockets  # type: ignore[attr-defined]
    yield start
    for s in sockets:
        s.close(linger=0)
    for server in servers:
        server.stop(timeout_s=10)


def socket(serve: Callable[..., LineServer], kind: int, endpoint: str) -> zmq.Socket:
    sock = CTX.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    serve.sockets.append(sock)  # type: ignore[attr-defined]
    return sock


def test_mixed_stream_gets_exactly_one_verdict_per_frame(serve, weave_parts) -> None:
    server = serve(cameras={"cam2": {"product": "weave"}}, zero_shot=True,
                   limits={"max_height": 1024, "max_width": 1024})
    watcher = watch(server)
    part = weave_parts[4]
    jpeg_bytes = cv2.imencode(".jpg", part)[1].tobytes()
    # (camera socket, message, expected verdict or error code); None camera: too broken to address
    stream = [
        ("cam0", frame("cam0", "ok-raw", part), "OK"),
        ("cam1", frame("cam1", "ok-png", weave_parts[5], encoding="png"), "OK"),
        ("cam1", frame("cam1", "ok-jpeg", weave_parts[6], encoding="jpeg"), "judged"),
        ("cam2", frame("cam2", "camera-product", weave_parts[7], product=None), "OK"),
        ("cam0", frame("cam0", "zero-shot", part, product=None), "judged"),
        ("cam0", [header_json(camera_id="cam0", frame_id="bad-header", gain=2), b"x"], "BAD_HEADER"),
        ("cam1", [*frame("cam1", "bad-parts", part), b"extra"], "BAD_PARTS"),
        ("cam1", [frame("cam1", "bad-shape", part)[0], part.tobytes()[:-3]], "BAD_SHAPE"),
        ("cam2", frame("cam2", "too-small", np.zeros((4, 4, 3), np.uint8)), "BAD_SHAPE"),
        ("cam0", [header_json(camera_id="cam0", frame_id="bad-payload", product="weave", encoding="jpeg"),
                  jpeg_bytes[: len(jpeg_bytes) // 2]], "BAD_PAYLOAD"),
        ("cam2", frame("cam2", "unknown-product", part, product="gear"), "UNKNOWN_PRODUCT"),
        ("cam0", frame("cam0", "oversize", np.zeros((2000, 8), np.uint8)), "OVERSIZE"),
        ("cam1", frame("cam1", "ok-after-bad", weave_parts[8]), "OK"),
        (None, [b"\x00garbage", b"x"], None),
        (None, [b'{"frame_id": "no-camera"}'], None),
    ]
    pushers = {cam: socket(serve, zmq.PUSH, server.endpoints.frames) for cam in ("cam0", "cam1", "cam2")}
    pushers[None] = pushers["cam0"]
    for cam, message, _ in stream:
        pushers[cam].send_multipart(message)
    expected = {json.loads(m[0]).get("frame_id"): e for c, m, e in stream if c is not None}

    events = until(watcher, lambda ev: {v.frame_id for v in verdicts_of(ev)} >= set(expected), settle_s=0.5)
    verdicts = verdicts_of(events)
    assert Counter(v.frame_id for v in verdicts) == Counter(set(expected))  # exactly one each
    for v in verdicts:
        want = expected[v.frame_id]
        if want == "judged":
            assert v.verdict in ("OK", "NG") and v.score is not None, v
        elif want in ("OK", "NG"):
            assert v.verdict == want and v.bundle_id and v.latency_ms.total > 0, v
        else:
            assert v.verdict == "ERROR" and v.error.code == want, v
    by_id = {v.frame_id: v for v in verdicts}
    assert by_id["zero-shot"].decided_by == "zero-shot" and by_id["zero-shot"].calibration == "uncalibrated"
    assert by_id["ok-raw"].calibration in ("conformal", "tail")
    assert by_id["camera-product"].product == "weave" and by_id["camera-product"].decided_by == "few-shot"
    assert by_id["ok-raw"].latency_ms.encoder > 0
    assert sorted(v.seq for v in verdicts) == list(range(1, len(verdicts) + 1))
    assert "gap" not in [e.kind for e in events]

    wait_for(lambda: server.heartbeat().dropped == 2)
    beat = server.heartbeat()
    assert beat.frames_in == len(stream) and beat.dropped == 2 and beat.verdicts_out == len(expected)
    assert beat.errors["BAD_SHAPE"] == 2 and beat.errors["BAD_HEADER"] == 2  # one of them dropped
    assert beat.ready and beat.queue_depth == 0
    watcher.close()


def test_deadline_turns_into_timeout(serve, weave_parts) -> None:
    server = serve(cameras={"rushed": {"deadline_ms": 0.001}})
    watcher = watch(server)
    push = socket(serve, zmq.PUSH, server.endpoints.frames)
    for i in range(3):
        push.send_multipart(frame("rushed", f"r{i}", weave_parts[4 + i]))
        push.send_multipart(frame("calm", f"c{i}", weave_parts[4 + i]))
    verdicts = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 6, settle_s=0.2))
    assert {v.frame_id: v.verdict for v in verdicts} == {**{f"r{i}": "TIMEOUT" for i in range(3)},
                                                          **{f"c{i}": "OK" for i in range(3)}}
    watcher.close()


def test_overload_is_answered_not_queued(serve, weave_parts) -> None:
    server = serve(batching={"max_batch": 1, "max_queue": 2, "max_queue_delay_ms": 0})
    watcher = watch(server)
    push = socket(serve, zmq.PUSH, server.endpoints.frames)
    n = 30
    for i in range(n):
        push.send_multipart(frame("cam0", f"f{i}", weave_parts[4 + i % 4]))
    verdicts = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= n, settle_s=0.3))
    assert sorted(v.frame_id for v in verdicts) == sorted(f"f{i}" for i in range(n))
    kinds = Counter(v.error.code if v.error else v.verdict for v in verdicts)
    assert kinds["OVERLOADED"] >= n // 2 and kinds["OK"] >= 2, kinds  # at least the queue's worth inspected
    assert set(kinds) <= {"OVERLOADED", "OK"}, kinds
    assert server.heartbeat().errors["OVERLOADED"] == kinds["OVERLOADED"]
    watcher.close()


def test_inspect_handshake_with_req_and_dealer(serve, weave_parts) -> None:
    server = serve()
    watcher = watch(server)
    req = socket(serve, zmq.REQ, server.endpoints.inspect)
    req.send_multipart(frame("plc", "trigger-1", weave_parts[4]))
    assert req.poll(30_000)
    reply = Verdict.model_validate_json(req.recv())
    assert (reply.frame_id, reply.camera_id, reply.verdict) == ("trigger-1", "plc", "OK")
    published = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 1))
    assert published[0].frame_id == "trigger-1" and published[0].seq == reply.seq >= 1

    req.send_multipart([b"\x00garbage", b"x"])  # too broken to publish, but a REQ always gets its answer
    assert req.poll(5000)
    broken = Verdict.model_validate_json(req.recv())
    assert broken.verdict == "ERROR" and broken.error.code == "BAD_HEADER" and broken.camera_id == ""

    dealer = socket(serve, zmq.DEALER, server.endpoints.inspect)
    for i in range(2):  # pipelined, with the REQ-style empty delimiter
        dealer.send_multipart([b"", *frame("gateway", f"d{i}", weave_parts[5 + i])])
    replies = []
    for _ in range(2):
        assert dealer.poll(30_000)
        empty, body = dealer.recv_multipart()
        assert empty == b""
        replies.append(Verdict.model_validate_json(body))
    assert sorted(r.frame_id for r in replies) == ["d0", "d1"]

    dealer.send_multipart(frame("gateway", "bare", weave_parts[7]))  # no delimiter: none comes back
    assert dealer.poll(30_000)
    (body,) = dealer.recv_multipart()
    assert Verdict.model_validate_json(body).frame_id == "bare"
    wait_for(lambda: server.heartbeat().replies_out == 5)  # counted just after the send
    assert server.heartbeat().dropped == 0
    watcher.close()


def test_restarted_subscriber_sees_the_gap(serve, weave_parts) -> None:
    server = serve(zero_shot=True)
    req = socket(serve, zmq.REQ, server.endpoints.inspect)

    def inspect(frame_id: str) -> Verdict:
        req.send_multipart(frame("plc", frame_id, weave_parts[4], product=None))
        assert req.poll(30_000)
        return Verdict.model_validate_json(req.recv())

    watcher = watch(server)
    for i in range(2):
        inspect(f"seen{i}")
    until(watcher, lambda ev: len(verdicts_of(ev)) >= 2)
    watcher.close()  # the subscriber goes away ...
    missed = [inspect(f"missed{i}").seq for i in range(3)]
    watcher.reconnect()  # ... and comes back: the next heartbeat tells it what it missed
    events = until(watcher, lambda ev: any(e.kind == "gap" for e in ev), timeout_s=10)
    gap = next(e for e in events if e.kind == "gap")
    assert gap.missing == 3 and missed == [3, 4, 5]
    inspect("after")
    events = until(watcher, lambda ev: len(verdicts_of(ev)) >= 1)
    assert [v.seq for v in verdicts_of(events)] == [6] and "gap" not in [e.kind for e in events]
    watcher.close()


def queue_frames(serve, server: LineServer, parts: list[np.ndarray], n: int) -> None:
    """Push n frames of cam0 and wait until the service has taken them all in."""
    push = socket(serve, zmq.PUSH, server.endpoints.frames)
    for i in range(n):
        push.send_multipart(frame("cam0", f"f{i}", parts[4 + i % 4]))
    wait_for(lambda: server.frames_in == n)


def test_stop_drains_in_flight_frames(serve, weave_parts) -> None:
    server = serve(batching={"max_batch": 1, "max_queue_delay_ms": 0}, drain_timeout_ms=30_000)
    watcher = watch(server)
    n = 12
    queue_frames(serve, server, weave_parts, n)
    server.request_stop()
    wait_for(lambda: server.heartbeat().draining)
    req = socket(serve, zmq.REQ, server.endpoints.inspect)
    req.send_multipart(frame("plc", "late", weave_parts[4]))
    assert req.poll(10_000)
    refused = Verdict.model_validate_json(req.recv())
    assert refused.verdict == "ERROR" and refused.error.code == "SHUTTING_DOWN"
    assert not server.ready
    server.stop(timeout_s=30)
    events = until(watcher, lambda ev: len(verdicts_of(ev)) >= n + 1, timeout_s=10, settle_s=0.2)
    verdicts = {v.frame_id: v.verdict for v in verdicts_of(events)}
    assert verdicts == {**{f"f{i}": "OK" for i in range(n)}, "late": "ERROR"}
    watcher.close()


def test_drain_timeout_answers_the_rest_timeout(serve, weave_parts) -> None:
    server = serve(batching={"max_batch": 1, "max_queue_delay_ms": 0}, drain_timeout_ms=50)
    watcher = watch(server)
    n = 10
    queue_frames(serve, server, weave_parts, n)
    server.stop(timeout_s=10)
    verdicts = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= n, timeout_s=10, settle_s=0.2))
    kinds = Counter(v.verdict for v in verdicts)
    assert sorted(v.frame_id for v in verdicts) == sorted(f"f{i}" for i in range(n))
    assert kinds["TIMEOUT"] >= 1 and set(kinds) <= {"OK", "TIMEOUT"}, kinds
    watcher.close()


def test_ready_only_while_serving_and_heartbeat_stops(inspector) -> None:
    config = LineConfig(line="l1", endpoints=LOOPBACK, heartbeat_interval_ms=100)
    server = LineServer(inspector, config)
    assert not server.ready
    server.start(timeout_s=60)
    try:
        assert server.ready
        watcher = watch(server)
        beat = next(e.heartbeat for e in until(watcher, lambda ev: any(e.kind == "heartbeat" for e in ev))
                    if e.kind == "heartbeat")
        assert beat.ready and beat.line == "l1" and beat.boot_id == server.boot_id
    finally:
        server.stop(timeout_s=10)
    assert not server.ready
    until(watcher, lambda ev: any(e.kind == "heartbeat_missed" for e in ev), timeout_s=5)
    watcher.close()


def test_start_fails_clearly(serve, inspector) -> None:
    with pytest.raises(ServerError, match="gear"):
        LineServer(inspector, LineConfig(line="l1", endpoints=LOOPBACK, products=["gear"])).start(timeout_s=30)
    with pytest.raises(ServerError, match=r"cameras.cam0.product: 'gear' is not served \(enrolled and served here"):
        LineServer(inspector, LineConfig(line="l1", endpoints=LOOPBACK,
                                         cameras={"cam0": {"product": "gear"}})).start(timeout_s=30)
    first = serve()
    taken = {**LOOPBACK, "frames": first.endpoints.frames}
    with pytest.raises(ServerError, match="cannot bind frames"):
        LineServer(inspector, LineConfig(line="l2", endpoints=taken)).start(timeout_s=30)


def test_ng_frames_are_archived_with_their_maps(enrolled_dir: Path, weave_parts, ng_weave, tmp_path: Path) -> None:
    """An NG frame lands in the archive ring with its anomaly map; OK frames are not kept by default."""
    from lineguard.runtime.contract import new_header
    from lineguard.runtime.line.archive import FrameArchive

    config = LineConfig(line="t", endpoints={"frames": "tcp://127.0.0.1:*", "verdicts": "tcp://127.0.0.1:*",
                                              "inspect": "tcp://127.0.0.1:*"},
                        deadline_ms=5000, archive={"dir": str(tmp_path / "ring"), "max_bytes": 50_000_000})
    with LineServer.from_bundle(enrolled_dir, config) as server:
        replies = inspect_frames(server.endpoints.inspect, [encode_frame(new_header("cam0", frame_id, "weave"), image)
                                                            for frame_id, image in (("ng-1", ng_weave), ("ok-1", weave_parts[13]))])
        assert server.archive.load("cam0", "ng-1") is not None  # archived before its verdict went out
    assert [v.verdict for v in replies] == ["NG", "OK"]
    archive = FrameArchive(tmp_path / "ring", max_bytes=50_000_000)
    kept = archive.load("cam0", "ng-1")
    assert kept is not None and kept.verdict.verdict == "NG" and kept.anomaly_map.shape == (224, 224)
    assert archive.load("cam0", "ok-1") is None


def test_new_calibration_normals_are_served_without_a_restart(enrolled_dir: Path, weave_parts, tmp_path: Path) -> None:
    """`lineguard calibrate` writes the bundle while the line runs: the next heartbeat tick re-reads it, and
    verdicts move from the fitted tail to the rank test once the images resolve the budget."""
    import shutil

    from lineguard.export.textures import texture_variants
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.scoring.enroll import calibrate_product

    copy = tmp_path / "bundle"
    shutil.copytree(enrolled_dir, copy)
    budget = 0.03  # needs 33 calibration images; the fixture's product has 24
    inspector = Inspector(copy, false_reject_budget=budget)
    config = LineConfig(line="l1", endpoints=LOOPBACK, deadline_ms=30_000, heartbeat_interval_ms=100,
                        products=["weave"], false_reject_budget=budget)
    with LineServer(inspector, config) as server:
        before = inspect_frames(server.endpoints.inspect, [frame("plc", "before", weave_parts[5])])[0]
        assert before.calibration == "tail"
        server.drift.record("cam9", "gear", True, 0.001)  # another product's window: not re-calibrated
        wait_for(lambda: {w.product for w in server.drift.snapshot().windows} == {"weave", "gear"})
        more = texture_variants("weave", 52, seed=7)[40:52]  # normals nobody has seen yet
        calibrate_product(Bundle.open(copy), "weave", more)
        wait_for(lambda: inspector.calibration_status("weave") == "conformal")
        # weave's window was judged by the replaced calibration and starts over; gear's stands
        assert [(w.camera_id, w.product) for w in server.drift.snapshot().windows] == [("cam9", "gear")]
        after = inspect_frames(server.endpoints.inspect, [frame("plc", "after", weave_parts[5])])[0]
    assert after.calibration == "conformal" and after.p_value >= 1 / 37


def test_a_server_releases_the_backends_it_opened_and_leaves_a_passed_inspector_open(
        enrolled_dir: Path, inspector: Inspector) -> None:
    from lineguard.runtime.inference.base import BackendClosedError

    probe = {"image": np.zeros((1, 3, *inspector.input_size), np.float32)}
    with LineServer.from_bundle(enrolled_dir, LineConfig(line="own", endpoints=LOOPBACK)) as own:
        encoder = own.inspector.chain.encoder
        encoder.run(probe)  # open while it serves
    with pytest.raises(BackendClosedError):
        encoder.run(probe)  # made by from_bundle: released on stop
    with LineServer(inspector, LineConfig(line="lent", endpoints=LOOPBACK)):
        pass
    assert inspector.chain.encoder.run(probe)  # the caller's inspector still runs


def test_a_line_on_ipv6_loopback_serves_the_runtime_clients(serve, weave_parts) -> None:
    """The camera and the watcher reach a line bound at [::1] (libzmq sockets are IPv4-only unless told)."""
    from lineguard.runtime.clients.camera import CameraPusher

    server = serve(endpoints=dict.fromkeys(("frames", "verdicts", "inspect"), "tcp://[::1]:*"))
    assert server.endpoints.frames.startswith("tcp://[::1]:")
    watcher = watch(server)
    with CameraPusher(server.endpoints.frames, "cam6", [], product="weave") as camera:
        assert camera.push(weave_parts[4], frame_id="over-ipv6")
    got = verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 1))
    assert [(v.frame_id, v.verdict) for v in got] == [("over-ipv6", "OK")]
    watcher.close()


def test_a_frame_whose_score_is_nan_is_answered_internal_not_ok(serve, weave_parts,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken chain's NaN score would compare as "not NG" and pass as OK: the line answers ERROR INTERNAL."""
    import lineguard.runtime.scoring.inspector as module

    server = serve()
    watcher = watch(server)
    monkeypatch.setattr(module, "image_scores", lambda maps: np.full(len(maps), np.nan))
    req = socket(serve, zmq.REQ, server.endpoints.inspect)
    req.send_multipart(frame("plc", "nan-1", weave_parts[4]))
    assert req.poll(30_000)
    reply = Verdict.model_validate_json(req.recv())
    assert (reply.verdict, reply.error.code, reply.frame_id) == ("ERROR", "INTERNAL", "nan-1")
    assert "non-finite anomaly score" in reply.error.message
    assert verdicts_of(until(watcher, lambda ev: len(verdicts_of(ev)) >= 1))[0].frame_id == "nan-1"
