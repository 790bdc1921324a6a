"""A camera for the line service: push frames from a folder, a video file or a capture device.

Usage::

    from lineguard.runtime.clients.camera import CameraPusher

    pusher = CameraPusher("tcp://localhost:5555", "cam0", "data/tile/test/good", product="tile",
                          fps=10, encoding="jpeg", count=100)
    sent = pusher.run()                     # blocks until count frames (or the source ends)
    pusher.close()

``source`` is a folder of images (sorted by name), a video file, a device index (``0`` or ``"0"``)
or a sequence of uint8 BGR arrays. ``loop=True`` starts a folder, video or sequence over when it ends.

The PUSH socket connects and ZeroMQ reconnects by itself when the service restarts. It queues frames
only on a live connection (``IMMEDIATE``) and at most ``hwm`` of them: a frame that cannot be handed
over within ``send_timeout_ms`` is dropped and counted, so a service that comes back is never fed a
backlog of stale frames. On a line with CURVE on, a camera whose key is not allowed never connects:
its frames are dropped and counted here, and the service never sees them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import zmq
from pydantic import ValidationError

from lineguard.runtime.contract import Encoding, encode_frame, new_header
from lineguard.runtime.contract.addresses import is_ipv6_endpoint
from lineguard.runtime.contract.validation import describe_validation_error
from lineguard.runtime.image_io import ImageReadError, image_paths, read_image
from lineguard.runtime.security.curve import CurveClientConfig

log = logging.getLogger(__name__)

Source = str | os.PathLike[str] | int | Sequence[np.ndarray]


class CameraError(ValueError):
    """The source cannot be opened or read."""


class CameraPusher:
    def __init__(
        self,
        endpoint: str,
        camera_id: str,
        source: Source,
        product: str | None = None,
        fps: float = 0.0,
        encoding: Encoding = "raw",
        count: int | None = None,
        loop: bool = False,
        hwm: int = 16,
        send_timeout_ms: int = 1000,
        linger_ms: int = 500,
        jpeg_quality: int = 90,
        context: zmq.Context | None = None,
        curve: CurveClientConfig | None = None,
    ) -> None:
        """``fps`` 0 pushes as fast as the socket takes frames; ``count`` None pushes until the source ends;
        ``curve``: this camera's key pair and the server's public key, for a line with CURVE on."""
        if fps < 0:
            raise ValueError(f"fps must be >= 0, got {fps}")
        try:  # what every frame's header will carry, checked once here rather than at the first push
            new_header(camera_id, f"{camera_id}-probe", product, encoding)
        except ValidationError as exc:
            raise CameraError(f"camera id {camera_id!r} or product {product!r} cannot go in a frame header: "
                              f"{describe_validation_error(exc, whole='header')}") from None
        self.endpoint = endpoint
        self.camera_id = camera_id
        self.source = source
        self.product = product
        self.fps = fps
        self.encoding: Encoding = encoding
        self.count = count
        self.loop = loop
        self.jpeg_quality = jpeg_quality
        self.run_id = uuid.uuid4().hex[:6]  # frame ids stay unique across restarts of the pusher
        self.sent = 0
        self.dropped = 0
        self.socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, linger_ms)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        if curve is not None:
            curve.secure(self.socket)
        self.socket.setsockopt(zmq.IPV6, is_ipv6_endpoint(endpoint))
        self.socket.connect(endpoint)

    def frames(self) -> Iterator[np.ndarray]:
        """The source's images (uint8 BGR), once or looping."""
        while True:
            produced = False
            for image in self._read_once():
                produced = True
                yield image
            if not self.loop or not produced or self._is_device():
                return

    def _is_device(self) -> bool:
        return isinstance(self.source, int) or (isinstance(self.source, str) and self.source.isdigit())

    def _read_once(self) -> Iterator[np.ndarray]:
        source = self.source
        if isinstance(source, Sequence) and not isinstance(source, str | bytes):
            yield from source
            return
        if self._is_device():
            yield from _capture(cv2.VideoCapture(int(source)), f"device {source}")  # type: ignore[arg-type]
            return
        path = Path(source)  # type: ignore[arg-type]
        if path.is_dir():
            paths = image_paths(path)
            if not paths:
                raise CameraError(f"{path} holds no images")
            readable = 0
            for p in paths:
                try:
                    image = read_image(p)
                except ImageReadError as exc:  # one bad file does not stop a replay of the others
                    log.warning("camera %s skips %s", self.camera_id, exc)
                    continue
                readable += 1
                yield image
            if not readable:
                raise CameraError(f"{path} holds no readable image")
        elif path.is_file():
            yield from _capture(cv2.VideoCapture(str(path)), str(path))
        else:
            raise CameraError(f"{path} is neither a folder, a video file nor a device index")

    def push(self, image: np.ndarray, frame_id: str | None = None) -> bool:
        """Send one frame; False when it was dropped (no connection or queue full within the timeout)."""
        frame_id = frame_id or f"{self.camera_id}-{self.run_id}-{self.sent + self.dropped:07d}"
        header = new_header(self.camera_id, frame_id, self.product, self.encoding)
        try:
            self.socket.send_multipart(encode_frame(header, image, self.jpeg_quality))
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def run(self, stop: threading.Event | None = None) -> int:
        """Push frames at ``fps`` until ``count`` were handled, the source ends or ``stop`` is set."""
        start = time.monotonic()
        n = 0
        for image in self.frames():
            if (self.count is not None and n >= self.count) or (stop is not None and stop.is_set()):
                break
            delay = start + n / self.fps - time.monotonic() if self.fps > 0 else 0.0
            if delay > 0:
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    break
            self.push(image)
            n += 1
        if self.dropped:
            log.warning("camera %s dropped %d of %d frames", self.camera_id, self.dropped, n)
        return self.sent

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> CameraPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _capture(capture: cv2.VideoCapture, name: str) -> Iterator[np.ndarray]:
    if not capture.isOpened():
        raise CameraError(f"OpenCV cannot open {name}")
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            yield image
    finally:
        capture.release()
