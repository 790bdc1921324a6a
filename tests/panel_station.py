"""A whole station on loopback for the panel's tests: line service + its HTTP port + the panel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq
from line_helpers import inspect_frames

from lineguard.panel.app import create_app
from lineguard.panel.settings import PanelSettings
from lineguard.runtime.contract import Verdict, encode_frame, new_header
from lineguard.runtime.http.service import RuntimeHttpService, UvicornThread
from lineguard.runtime.line.config import HttpEndpoint, LineConfig
from lineguard.runtime.line.server import LineServer

LOOPBACK = "tcp://127.0.0.1:*"


@dataclass
class Station:
    server: LineServer
    http: RuntimeHttpService
    panel: UvicornThread
    settings: PanelSettings

    def push(self, camera: str, frame_id: str, image: np.ndarray) -> None:
        """What a line camera does: PUSH a frame, expect nothing back."""
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(self.server.endpoints.frames)
        push.send_multipart(encode_frame(new_header(camera, frame_id, "weave"), image))
        push.close()

    def inspect(self, camera: str, frame_id: str, image: np.ndarray) -> Verdict:
        return inspect_frames(self.server.endpoints.inspect, [encode_frame(new_header(camera, frame_id, "weave"),
                                                                           image)])[0]


@contextlib.contextmanager
def running_station(bundle: Path, archive: Path, line_options: dict | None = None,
                    **panel_options: object) -> Iterator[Station]:
    config = LineConfig(**(line_options or {}), line="press1", products=["weave"], deadline_ms=20_000, heartbeat_interval_ms=250,
                        endpoints={"frames": LOOPBACK, "verdicts": LOOPBACK, "inspect": LOOPBACK,
                                   "explanations": LOOPBACK},
                        archive={"dir": str(archive), "max_bytes": 50_000_000},
                        explanations={"max_pending": 2, "max_tokens": 48, "threads": 2})
    with LineServer.from_bundle(bundle, config) as server, \
            RuntimeHttpService(HttpEndpoint(host="127.0.0.1", port=0)) as http:
        http.attach(server)
        settings = PanelSettings(verdicts=server.endpoints.verdicts, explanations=server.endpoints.explanations,
                                 runtime_http=http.url, port=0, **panel_options)
        panel = UvicornThread(create_app(settings), "127.0.0.1", 0, "panel").start()
        try:
            yield Station(server, http, panel, settings)
        finally:
            panel.stop()
