"""CameraPusher against a plain PULL socket on loopback: sources, encodings, pacing, drops, reconnects."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from lineguard.runtime.clients.camera import CameraError, CameraPusher
from lineguard.runtime.contract import FrameHeader, decode_frame

CTX = zmq.Context.instance()
IMAGES = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(4)]


@pytest.fixture
def pull():
    sock = CTX.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close()


def receive(sock: zmq.Socket, n: int, timeout_ms: int = 5000) -> list[tuple[FrameHeader, np.ndarray]]:
    out = []
    for _ in range(n):
        assert sock.poll(timeout_ms), f"received {len(out)} of {n} frames"
        out.append(decode_frame(sock.recv_multipart(copy=False)))
    return out


def endpoint(sock: zmq.Socket) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def test_folder_as_jpeg(pull: zmq.Socket, tmp_path: Path) -> None:
    for i, image in enumerate(IMAGES):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), image)
    with CameraPusher(endpoint(pull), "cam7", tmp_path, product="tile", encoding="jpeg") as camera:
        assert camera.run() == 4
    frames = receive(pull, 4)
    assert [h.camera_id for h, _ in frames] == ["cam7"] * 4
    assert all(h.product == "tile" and h.encoding == "jpeg" and h.timestamp_ns > 0 for h, _ in frames)
    assert len({h.frame_id for h, _ in frames}) == 4
    assert [int(px.mean()) for _, px in frames] == pytest.approx([0, 40, 80, 120], abs=2)


def test_sequence_loops_up_to_count_at_fps(pull: zmq.Socket) -> None:
    with CameraPusher(endpoint(pull), "cam0", IMAGES, fps=50, count=6, loop=True) as camera:
        start = time.monotonic()
        assert camera.run() == 6
        assert time.monotonic() - start >= 5 / 50 * 0.9
    frames = receive(pull, 6)
    assert [int(px[0, 0, 0]) for _, px in frames] == [0, 40, 80, 120, 0, 40]
    assert all(h.encoding == "raw" and h.shape == (32, 48, 3) for h, _ in frames)


def test_video_file(pull: zmq.Socket, tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    if not writer.isOpened():
        pytest.skip("this OpenCV build writes no MJPG video")
    for image in IMAGES:
        writer.write(image)
    writer.release()
    with CameraPusher(endpoint(pull), "cam0", str(path), encoding="png") as camera:
        assert camera.run() == 4
    assert [px.shape[:2] for _, px in receive(pull, 4)] == [(32, 48)] * 4


def test_no_service_drops_instead_of_queueing(pull: zmq.Socket) -> None:
    with CameraPusher("tcp://127.0.0.1:1", "cam0", IMAGES, send_timeout_ms=20) as camera:
        start = time.monotonic()
        assert camera.run() == 0
        assert camera.dropped == 4 and time.monotonic() - start < 2


def test_reconnects_when_the_service_comes_back(pull: zmq.Socket) -> None:
    address = endpoint(pull)
    camera = CameraPusher(address, "cam0", IMAGES, send_timeout_ms=3000)
    try:
        assert camera.push(IMAGES[1])
        assert receive(pull, 1)[0][1][0, 0, 0] == 40
        pull.close()
        restarted = CTX.socket(zmq.PULL)
        restarted.setsockopt(zmq.LINGER, 0)
        try:
            time.sleep(0.2)
            restarted.bind(address)
            assert camera.push(IMAGES[2])
            assert receive(restarted, 1)[0][1][0, 0, 0] == 80
        finally:
            restarted.close()
    finally:
        camera.close()


def test_bad_source() -> None:
    with CameraPusher("tcp://127.0.0.1:1", "cam0", "/no/such/place") as camera, pytest.raises(CameraError):
        camera.run()


def test_a_folder_replay_skips_an_unreadable_file(pull: zmq.Socket, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cv2.imwrite(str(tmp_path / "00.png"), IMAGES[1])
    (tmp_path / "01.png").write_bytes(b"half a png")
    cv2.imwrite(str(tmp_path / "02.png"), IMAGES[2])
    with CameraPusher(endpoint(pull), "cam3", tmp_path) as camera:
        assert camera.run() == 2
    assert [int(px[0, 0, 0]) for _, px in receive(pull, 2)] == [40, 80]
    assert "camera cam3 skips" in caplog.text and "01.png is not a readable image" in caplog.text

    (tmp_path / "00.png").write_bytes(b"")
    (tmp_path / "02.png").unlink()
    with CameraPusher(endpoint(pull), "cam3", tmp_path) as camera, pytest.raises(CameraError, match="no readable"):
        camera.run()
