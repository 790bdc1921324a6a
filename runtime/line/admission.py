"""Which frames the line takes: a message read from the frames or inspect socket -> a FrameRequest, or a refusal.

Usage::

    admission = Admission(config, served={"weave"}, curve=curve)
    try:
        request = admission.request(parts, envelope, received=time.monotonic(), draining=False)
    except FrameError as exc:
        ...                           # answer it ERROR with exc.code (exc.ids: what could be read)

Owns the checks a frame passes before it is queued, in order: the header parses within the line's limits;
with CURVE, the sender's key (its ZAP User-Id) may speak for the camera the frame names (else
CAMERA_NOT_ALLOWED, checked even for a frame refused otherwise: only a camera's keys may publish on its
topic); the product (the header's, else the camera's) is served, or the line judges zero-shot; the line is
not draining. The pixels are not decoded here: ``FrameRequest.load`` decodes them on an inference worker.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import zmq

from lineguard.runtime.contract import (
    ErrorCode,
    FrameError,
    FrameHeader,
    FrameIds,
    decode_payload,
    parse_header,
)
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.pending import FrameRequest
from lineguard.runtime.security.curve_auth import UNKNOWN_CLIENT, CurveAuthority


class Admission:
    def __init__(self, config: LineConfig, served: set[str], curve: CurveAuthority | None = None) -> None:
        self.config = config
        self.served = served
        self.curve = curve

    def request(self, parts: list[zmq.Frame], envelope: list[bytes] | None, received: float,
                draining: bool) -> FrameRequest:
        """The request for a ``[header, payload]`` message received at ``received`` (``time.monotonic``);
        raises FrameError when the frame is refused. ``envelope`` rides along to address the reply."""
        limits = self.config.limits
        try:
            header = parse_header(parts, limits)
        except FrameError as exc:  # even a refusal is published on the camera's topic: only its keys may
            self.check_camera(parts, exc.ids)
            raise
        self.check_camera(parts, header)
        product = self.config.product_for(header.camera_id, header.product)
        header = header.model_copy(update={"product": product})
        if product is None and not self.config.zero_shot:
            raise FrameError(ErrorCode.UNKNOWN_PRODUCT, "the frame names no product and the line "
                             "does not judge zero-shot", header)
        if product is not None and product not in self.served:
            raise FrameError(ErrorCode.UNKNOWN_PRODUCT, f"product {product!r} is not served on line "
                             f"{self.config.line}; served: {sorted(self.served)}", header)
        if draining:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "the line is shutting down", header)
        return FrameRequest(
            header.camera_id, header.frame_id, product,
            deadline=received + self.config.deadline_for(header.camera_id) / 1e3,
            load=functools.partial(decode_payload, header, parts[1], limits),
            received=received, context=envelope,
        )

    def check_camera(self, parts: Sequence[zmq.Frame], ids: FrameIds | FrameHeader) -> None:
        """With CURVE: the sender's key (its ZAP User-Id) must be allowed to speak for the camera it names."""
        if self.curve is None or not ids.camera_id or not parts:
            return
        try:
            client = parts[0].get("User-Id")
        except (zmq.ZMQError, AttributeError):  # no metadata: not a message from a CURVE peer
            client = UNKNOWN_CLIENT
        if not self.curve.grant(client).may_claim(ids.camera_id):
            raise FrameError(ErrorCode.CAMERA_NOT_ALLOWED, f"key {client!r} may not speak for camera "
                             f"{ids.camera_id!r} (security.curve.clients)", ids)
