"""The runtime's HTTP port against a real line on loopback: /healthz, /readyz, /metrics, the NG archive.

/metrics is read with prometheus-client's own parser; counters must move with the traffic sent.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from line_helpers import inspect_frames
from prometheus_client.parser import text_string_to_metric_families

from lineguard.runtime.contract import ArchivedVerdict, Readiness, encode_frame, new_header
from lineguard.runtime.http.service import HttpServiceError, RuntimeHttpService
from lineguard.runtime.line.config import HttpEndpoint, LineConfig
from lineguard.runtime.line.server import LineServer

LOOPBACK = "tcp://127.0.0.1:*"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page, keyed by (sample name, labels without line/boot_id)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if k not in ("line", "boot_id"))
            out[(s.name, labels)] = s.value
    return out


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def http() -> Iterator[RuntimeHttpService]:
    with RuntimeHttpService(HttpEndpoint(host="127.0.0.1", port=0)) as service:
        yield service


@pytest.fixture
def line(enrolled_dir: Path, tmp_path: Path) -> Iterator[LineServer]:
    config = LineConfig(line="m1", endpoints={"frames": LOOPBACK, "verdicts": LOOPBACK, "inspect": LOOPBACK},
                        deadline_ms=20_000, products=["weave"],
                        archive={"dir": str(tmp_path / "ring"), "max_bytes": 50_000_000})
    with LineServer.from_bundle(enrolled_dir, config) as server:
        yield server


def test_before_a_bundle_is_loaded_alive_but_not_ready(http: RuntimeHttpService) -> None:
    assert httpx.get(f"{http.url}/healthz").json() == {"alive": True}
    ready = httpx.get(f"{http.url}/readyz")
    assert ready.status_code == 503 and ready.json() == {"ready": False, "checks": {"bundle_loaded": False}}
    page = samples(httpx.get(f"{http.url}/metrics").text)
    assert value(page, "lineguard_ready") == 0.0
    assert httpx.get(f"{http.url}/api/frames").status_code == 404  # no line, no archive


def test_ready_metrics_and_gallery_follow_the_traffic(http: RuntimeHttpService, line: LineServer,
                                                      weave_parts: list[np.ndarray], ng_weave: np.ndarray) -> None:
    http.attach(line)
    ready = httpx.get(f"{http.url}/readyz")
    assert ready.status_code == 200, ready.text
    readiness = Readiness.model_validate(ready.json())
    assert readiness.ready and all(readiness.checks.values())

    before = samples(httpx.get(f"{http.url}/metrics").text)
    assert value(before, "lineguard_ready") == 1.0
    sent = [encode_frame(new_header("cam0", "ng-1", "weave"), ng_weave),
            encode_frame(new_header("cam0", "ok-1", "weave"), weave_parts[13]),
            encode_frame(new_header("cam0", "ok-2", "weave"), weave_parts[14]),
            [b'{"camera_id": "cam0", "frame_id": "bad-1", "encoding": "raw"}', b"not an image"]]
    verdicts = inspect_frames(line.endpoints.inspect, sent)
    assert [v.verdict for v in verdicts] == ["NG", "OK", "OK", "ERROR"]
    after = samples(httpx.get(f"{http.url}/metrics").text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("lineguard_frames_received_total") == 4
    assert moved("lineguard_verdicts_total", verdict="NG") == 1
    assert moved("lineguard_verdicts_total", verdict="OK") == 2
    assert moved("lineguard_verdicts_total", verdict="ERROR") == 1
    assert moved("lineguard_errors_total", code=verdicts[3].error.code) == 1
    assert moved("lineguard_stage_latency_seconds_count", stage="total") == 4
    assert moved("lineguard_stage_latency_seconds_count", stage="encoder") == 3  # the ERROR never got there
    assert moved("lineguard_stage_latency_seconds_sum", stage="encoder") > 0
    assert value(after, "lineguard_queue_depth") == 0

    gallery = httpx.get(f"{http.url}/api/frames", params={"verdict": "NG"}).json()
    assert [(v["camera_id"], v["frame_id"], v["verdict"]) for v in gallery] == [("cam0", "ng-1", "NG")]
    assert abs(ArchivedVerdict.model_validate(gallery[0]).archived_at - time.time()) < 120
    overlay = httpx.get(f"{http.url}/api/frames/cam0/ng-1/overlay.jpg")
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(overlay.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (448, 448, 3)
    assert httpx.get(f"{http.url}/api/frames/cam0/ok-1/overlay.jpg").status_code == 404  # OK frames not kept
    assert httpx.get(f"{http.url}/api/frames/..%2F..%2Fetc/passwd/overlay.jpg").status_code == 404
    # by query, any id reaches the archive, which hashes it: a path in an id is only a name that was never stored
    traversal = httpx.get(f"{http.url}/api/overlay.jpg", params={"camera_id": "../..", "frame_id": "etc/passwd"})
    assert traversal.status_code == 404 and traversal.json() == {"error": "no such archived frame"}
    assert httpx.get(f"{http.url}/api/overlay.jpg", params={"camera_id": "cam0", "frame_id": "ng-1"}).status_code == 200
    assert httpx.get(f"{http.url}/api/overlay.jpg", params={"frame_id": "ng-1"}).status_code == 400
    assert httpx.get(f"{http.url}/api/frames", params={"limit": "100000"}).status_code == 400
    assert httpx.get(f"{http.url}/api/frames", params={"verdict": "MAYBE"}).status_code == 400

    line.loop_turning = lambda within_s=None: False  # as a loop stuck in a call would look
    stuck = httpx.get(f"{http.url}/healthz")
    assert stuck.status_code == 503 and "stuck" in stuck.json()["reason"]
    del line.loop_turning
    assert line.loop_turning() and httpx.get(f"{http.url}/healthz").status_code == 200

    line.stop()
    stopped = httpx.get(f"{http.url}/readyz")
    assert stopped.status_code == 503 and stopped.json()["checks"]["sockets_bound"] is False
    assert httpx.get(f"{http.url}/healthz").status_code == 200  # a clean stop is not a dead process


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HttpServiceError, match=f"127.0.0.1:{port}"):
            RuntimeHttpService(HttpEndpoint(host="127.0.0.1", port=port)).start()


def test_the_archive_routes_need_the_token_and_open_binds_need_one(tmp_path: Path) -> None:
    """Beyond loopback the port refuses to start without a token; with one, /api/frames* answer 401 without it
    while health, readiness and metrics stay open (probes and scrapers)."""
    with pytest.raises(HttpServiceError, match="beyond this machine"):
        RuntimeHttpService(HttpEndpoint(host="0.0.0.0", port=0))
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    with pytest.raises(HttpServiceError, match="shorter than"):
        RuntimeHttpService(HttpEndpoint(host="127.0.0.1", port=0, token_file=short))
    token = tmp_path / "http.token"
    token.write_text("a-long-enough-secret-token\n")
    with RuntimeHttpService(HttpEndpoint(host="0.0.0.0", port=0, token_file=token)) as service:
        url = f"http://127.0.0.1:{service.port}"
        assert httpx.get(f"{url}/api/frames", timeout=5).status_code == 401
        assert httpx.get(f"{url}/api/frames/cam0/f1/overlay.jpg", timeout=5).status_code == 401
        assert httpx.get(f"{url}/api/frames", headers={"Authorization": "Bearer nope-nope-nope"},
                         timeout=5).status_code == 401
        bearer = {"Authorization": "Bearer a-long-enough-secret-token"}
        assert httpx.get(f"{url}/api/frames", headers=bearer, timeout=5).status_code == 404  # no line: no archive
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200
    with RuntimeHttpService(HttpEndpoint(host="0.0.0.0", port=0), allow_open=True):  # security: insecure
        pass
