"""The panel's service without a browser: its board, its settings, and its API against a real station
(line service, its HTTP port, the default LLM) on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import zmq
from line_helpers import free_port
from panel_station import Station, running_station
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from lineguard.panel.app import create_app
from lineguard.panel.board import LineBoard
from lineguard.panel.settings import PanelSettings, PanelSettingsError
from lineguard.runtime.clients.explain import ExplainClient, ask
from lineguard.runtime.clients.watch import WatchEvent
from lineguard.runtime.contract import (
    ErrorCode,
    ErrorInfo,
    ExplainReply,
    ExplainRequest,
    StateMessage,
    Verdict,
)
from lineguard.runtime.http.service import UvicornThread


def verdict(cls: str, frame_id: str = "f", camera: str = "cam0", code: ErrorCode | None = None) -> Verdict:
    error = ErrorInfo(code=code, message="x") if code else None
    return Verdict(frame_id=frame_id, camera_id=camera, product="weave", verdict=cls, error=error)


# -- the board ----------------------------------------------------------------------------------------


def test_board_counts_rejects_and_raises_alarms() -> None:
    board = LineBoard(burst_errors=3, burst_window_s=10.0)
    for i, cls in enumerate(["OK", "OK", "NG", "OK"]):
        board.apply(WatchEvent("verdict", verdict=verdict(cls, f"f{i}")), now=100.0 + i)
    cam = board.snapshot().cameras[0]
    assert (cam.ok, cam.ng, cam.reject_rate) == (3, 1, 0.25)

    timeout = board.apply(WatchEvent("verdict", verdict=verdict("TIMEOUT", "t1", code=ErrorCode.TIMEOUT)), now=105.0)
    assert [m.type for m in timeout] == ["verdict", "alarm"] and timeout[1].alarm.kind == "timeout"

    kinds = []
    for i, at in enumerate([110.0, 111.0, 125.0, 126.0, 127.0]):  # the first two age out of the window
        kinds += [m.alarm.kind for m in board.apply(WatchEvent("verdict", verdict=verdict(
            "ERROR", f"e{i}", code=ErrorCode.BAD_PAYLOAD)), now=at) if m.type == "alarm"]
    assert kinds == ["error_burst"]

    board.apply(WatchEvent("heartbeat_missed", message="no heartbeat for 3.0 s"), now=130.0)
    state = board.snapshot()
    assert not state.connected
    assert [a.kind for a in state.alarms] == ["heartbeat_missed", "error_burst", "timeout"]
    assert state.recent[0].frame_id == "e4"
    assert StateMessage.model_validate_json(state.model_dump_json()) == state  # what the page receives


def test_the_board_keeps_the_cameras_heard_from_last() -> None:
    """A flood of made-up camera ids (ERROR verdicts for garbage frames are published too) is bounded; a camera
    that keeps speaking keeps its tile and its counts."""
    from lineguard.panel.board import MAX_CAMERAS

    board = LineBoard()
    flood = 3 * MAX_CAMERAS
    board.apply(WatchEvent("verdict", verdict=verdict("OK", "f0", camera="cam0")), now=1.0)
    for i in range(flood):
        board.apply(WatchEvent("verdict", verdict=verdict("ERROR", f"x{i}", camera=f"bogus-{i}",
                                                          code=ErrorCode.BAD_HEADER)), now=2.0 + i)
        if i % 10 == 0:  # the real camera goes on inspecting parts amid the flood
            board.apply(WatchEvent("verdict", verdict=verdict("NG", f"f{i}", camera="cam0")), now=2.5 + i)
    cameras = {c.camera_id: c for c in board.snapshot().cameras}
    assert len(cameras) == MAX_CAMERAS and "bogus-0" not in cameras and f"bogus-{flood - 1}" in cameras
    assert (cameras["cam0"].ok, cameras["cam0"].ng) == (1, len(range(0, flood, 10)))


def test_settings_refuse_an_open_panel_beyond_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINEGUARD_PANEL_TOKEN", raising=False)
    with pytest.raises(PanelSettingsError, match="operator token"):
        PanelSettings.for_runtime("10.1.2.3", host="0.0.0.0")
    assert PanelSettings.for_runtime("10.1.2.3").token is None  # loopback: open
    token = tmp_path / "token"
    token.write_text("short\n")
    with pytest.raises(PanelSettingsError, match="at least 12"):
        PanelSettings.for_runtime("10.1.2.3", token_file=token, host="0.0.0.0")
    token.write_text("correct-horse-battery\n")
    settings = PanelSettings.for_runtime("10.1.2.3", token_file=token, host="0.0.0.0")
    assert settings.token.get_secret_value() == "correct-horse-battery"
    assert (settings.verdicts, settings.runtime_http) == ("tcp://10.1.2.3:5556", "http://10.1.2.3:8081")
    with pytest.raises(PanelSettingsError, match="cannot read"):
        PanelSettings.for_runtime("10.1.2.3", token_file=tmp_path / "missing")


def test_settings_carry_the_runtimes_http_token(tmp_path: Path) -> None:
    """A runtime whose HTTP port is beyond loopback serves its archive only with its token; the panel sends it."""
    runtime_token = tmp_path / "http.token"
    runtime_token.write_text("runtime-archive-token-1234\n")
    settings = PanelSettings.for_runtime("10.1.2.3", runtime_token_file=runtime_token)
    assert settings.runtime_token is not None and settings.runtime_token.get_secret_value() == "runtime-archive-token-1234"
    assert "runtime-archive-token" not in repr(settings)  # a secret: never printed
    assert PanelSettings.for_runtime("10.1.2.3").runtime_token is None
    with pytest.raises(PanelSettingsError, match="runtime token file"):
        PanelSettings.for_runtime("10.1.2.3", runtime_token_file=tmp_path / "missing")


@pytest.mark.parametrize("runtime", ["127.0.0.1", "::1", "[fe80::1]", "runtime", "press3-runtime.plant.local", "10.1.2.3",
                                     "deploy_runtime_1"])
def test_settings_take_a_runtime_host_name_or_address(runtime: str) -> None:
    assert PanelSettings.for_runtime(runtime).verdicts.endswith(":5556")


@pytest.mark.parametrize("runtime", ["bad host!!", "", "tcp://10.1.2.3", "-runtime", "a..b"])
def test_settings_refuse_a_runtime_that_is_no_host(runtime: str) -> None:
    """The live feed's thread used to die on its first connect while the page kept loading."""
    with pytest.raises(PanelSettingsError, match="is not a host name or IP address"):
        PanelSettings.for_runtime(runtime)


# -- the explanation client, against a scripted explanation port ----------------------------------------


class ScriptedPort:
    """A stand-in for the runtime's explanation port (ROUTER): records every request; answers a question with
    ``chunks`` chunk replies and a final (``hold``: no final until a cancel, which ends it "cancelled"), or
    says nothing at all (``silent``)."""

    def __init__(self, chunks: int = 2, hold: bool = False, silent: bool = False) -> None:
        self.chunks, self.hold, self.silent = chunks, hold, silent
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests: list[ExplainRequest] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-explain-port", daemon=True)

    def __enter__(self) -> ScriptedPort:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _send(self, identity: bytes, reply: ExplainReply) -> None:
        self.sock.send_multipart([identity, reply.model_dump_json().encode()])

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            identity, body = self.sock.recv_multipart()
            request = ExplainRequest.model_validate_json(body)
            self.requests.append(request)
            if self.silent:
                continue
            if request.cancel:
                self._send(identity, ExplainReply(type="final", frame_id=request.frame_id, finish_reason="cancelled"))
                continue
            for i in range(self.chunks):
                self._send(identity, ExplainReply(type="chunk", frame_id=request.frame_id, text=f"word{i} "))
            if not self.hold:
                self._send(identity, ExplainReply(type="final", frame_id=request.frame_id, finish_reason="stop"))

    def wait_for(self, wanted: Callable[[ExplainRequest], bool], timeout_s: float = 10.0) -> ExplainRequest:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            found = [r for r in self.requests if wanted(r)]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no such request among {self.requests}")


def test_explain_client_streams_cancels_and_follows_up() -> None:
    with ScriptedPort(chunks=2) as port:
        replies = list(ask(port.endpoint, "f1", "Why?", idle_timeout_s=10))
        assert [r.type for r in replies] == ["chunk", "chunk", "final"]
        assert port.requests[-1] == ExplainRequest(frame_id="f1", question="Why?")

        with ExplainClient(port.endpoint, "f1", "Why?", idle_timeout_s=10) as first:
            assert "".join(r.text for r in first) == "word0 word1 "
        assert first.finished and not first.cancelled and not first.timed_out
        with first.follow_up("Where?") as second:  # the frame's conversation goes on
            assert [r.type for r in second][-1] == "final"
        assert port.requests[-1] == ExplainRequest(frame_id="f1", question="Where?", follow_up=True)
        assert not any(r.cancel for r in port.requests)  # finished answers are never cancelled

    with ScriptedPort(chunks=1, hold=True) as port:
        stream = ask(port.endpoint, "f2", idle_timeout_s=10)
        assert next(stream).type == "chunk"
        stream.close()  # the reader went away mid-answer: the runtime hears a cancel
        assert port.wait_for(lambda r: r.cancel).frame_id == "f2"

        with ExplainClient(port.endpoint, "f3", idle_timeout_s=10) as question:
            assert next(question).type == "chunk"
            question.cancel()  # stopped on purpose: the answer still ends, "cancelled"
            rest = list(question)
        assert [r.type for r in rest] == ["final"] and rest[0].finish_reason == "cancelled"
        assert question.cancelled and question.finished


def test_explain_client_gives_up_after_its_idle_timeout() -> None:
    with ScriptedPort(silent=True) as port:
        with ExplainClient(port.endpoint, "f1", idle_timeout_s=0.2) as question:
            replies = list(question)
        assert len(replies) == 1 and replies[0].type == "error" and replies[0].error is not None
        assert replies[0].error.code == ErrorCode.TIMEOUT and question.timed_out and not question.cancelled
        with pytest.raises(TimeoutError, match="no answer from .* answers only keys granted"):
            list(ask(port.endpoint, "f1", idle_timeout_s=0.2))


@contextlib.contextmanager
def panel_on(port: ScriptedPort, **options: object) -> Iterator[str]:
    """The panel alone, its "Why?" relayed to ``port`` (nothing publishes verdicts: viewing stays empty)."""
    settings = PanelSettings(verdicts=f"tcp://127.0.0.1:{free_port()}", explanations=port.endpoint,
                             runtime_http=f"http://127.0.0.1:{free_port()}", port=0, **options)
    panel = UvicornThread(create_app(settings), "127.0.0.1", 0, "panel").start()
    try:
        yield panel.url
    finally:
        panel.stop()


def test_panel_relays_through_the_explain_client() -> None:
    with ScriptedPort(chunks=2) as port, panel_on(port) as url:
        assert [r["type"] for r in explain(url, "f1", "Why?")] == ["chunk", "chunk", "final"]
        assert explain(url, "f1", "And where?", follow_up=True)[-1]["type"] == "final"
        assert port.requests[-1] == ExplainRequest(frame_id="f1", question="And where?", follow_up=True)

    with ScriptedPort(chunks=1, hold=True) as port, panel_on(port) as url:
        with httpx.stream("POST", f"{url}/api/explain", json={"frame_id": "f2"}, timeout=30) as response:
            assert next(sse_messages(response))[1]["type"] == "chunk"
        assert port.wait_for(lambda r: r.cancel).frame_id == "f2"  # the page went away: the runtime stops

    with ScriptedPort(silent=True) as port, panel_on(port, explain_idle_timeout_s=0.3) as url:
        replies = explain(url, "f3")
        assert len(replies) == 1 and replies[0]["type"] == "error"
        assert replies[0]["error"] == {"code": ErrorCode.TIMEOUT, "message": "the line's LLM said nothing for 0 s"}
        assert not any(r.cancel for r in port.requests)  # timed out: nothing to cancel


# -- against a real station ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def station(llm_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    with running_station(llm_bundle, tmp_path_factory.mktemp("archive")) as running:
        yield running


def sse_messages(response: httpx.Response) -> Iterator[tuple[str | None, dict]]:
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])
            event = None


def test_live_feed_streams_state_then_each_new_verdict(station: Station, weave_parts: list[np.ndarray]) -> None:
    with httpx.stream("GET", f"{station.panel.url}/api/events", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(response)
        kind, first = next(messages)
        assert kind == "state" and first["type"] == "state"
        station.push("cam7", "feed-1", weave_parts[5])
        for kind, message in messages:  # noqa: B007 (the loop finds it)
            if kind == "verdict":
                break
        assert message["verdict"]["frame_id"] == "feed-1" and message["verdict"]["verdict"] in ("OK", "NG")
        assert message["camera"]["camera_id"] == "cam7" and message["camera"]["ok"] + message["camera"]["ng"] == 1
    end = time.monotonic() + 10  # heartbeats come every 250 ms here
    while not (state := httpx.get(f"{station.panel.url}/api/state").json())["connected"]:
        assert time.monotonic() < end, state
        time.sleep(0.1)
    assert state["heartbeat"]["line"] == "press1" and state["cameras"][0]["camera_id"] == "cam7"


def test_gallery_and_overlay_come_through_the_panel(station: Station, ng_weave: np.ndarray) -> None:
    assert station.inspect("cam1", "gallery-ng", ng_weave).verdict == "NG"
    gallery = httpx.get(f"{station.panel.url}/api/gallery").json()
    assert gallery[0]["frame_id"] == "gallery-ng" and gallery[0]["regions"]
    overlay = httpx.get(f"{station.panel.url}/api/frames/cam1/gallery-ng/overlay.jpg")
    assert overlay.status_code == 200 and overlay.content[:2] == b"\xff\xd8"  # JPEG
    assert overlay.headers["cache-control"] == "private, no-cache"  # ids can come again (a counter reset)
    assert httpx.get(f"{station.panel.url}/healthz").json() == {"alive": True, "feed_restarts": 0}
    assert httpx.get(f"{station.panel.url}/api/frames/cam1/nope/overlay.jpg").status_code == 404


@pytest.mark.parametrize(("camera", "frame_id"), [("line1/cam1", "2024/05/01-0001"), ("cam1", ".."), ("cam1", "50%")])
def test_any_archived_id_has_its_overlay(station: Station, ng_weave: np.ndarray, camera: str, frame_id: str) -> None:
    """The page asks by query (/api/overlay.jpg?camera_id=&frame_id=): ids with "/" never matched the path
    route, and ".." was folded away by the relay."""
    assert station.inspect(camera, frame_id, ng_weave).verdict == "NG"
    for url in (station.panel.url, station.http.url):
        overlay = httpx.get(f"{url}/api/overlay.jpg", params={"camera_id": camera, "frame_id": frame_id})
        assert overlay.status_code == 200 and overlay.content[:2] == b"\xff\xd8", (url, overlay.text)
    missing = httpx.get(f"{station.panel.url}/api/overlay.jpg", params={"camera_id": camera})
    assert missing.status_code == 400 and "frame_id" in missing.json()["error"]


def explain(url: str, frame_id: str, question: str | None = None, headers: dict | None = None,
            follow_up: bool = False) -> list[dict]:
    body = {"frame_id": frame_id, "question": question, **({"follow_up": True} if follow_up else {})}
    with httpx.stream("POST", f"{url}/api/explain", json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        return [m for _, m in sse_messages(response)]


def test_why_streams_the_explanation_and_cancel_frees_the_model(station: Station, ng_weave: np.ndarray) -> None:
    assert station.inspect("cam1", "why-ng", ng_weave).verdict == "NG"
    replies = explain(station.panel.url, "why-ng")
    assert [r["type"] for r in replies[:-1]] == ["chunk"] * (len(replies) - 1) and replies[-1]["type"] == "final"
    assert "".join(r["text"] for r in replies[:-1]).strip()

    counts = station.server.explanations.counts
    stopped = counts["cancelled"] + counts["abandoned"]
    with httpx.stream("POST", f"{station.panel.url}/api/explain", json={"frame_id": "why-ng",
                      "question": "Describe the part in great detail."}, timeout=120) as response:
        kind, first = next(sse_messages(response))
        assert first["type"] == "chunk"
    # the page went away after the first words: the runtime stops that answer
    end = time.monotonic() + 30
    while counts["cancelled"] + counts["abandoned"] == stopped:
        assert time.monotonic() < end, "the runtime never heard of the cancel"
        time.sleep(0.05)
    assert explain(station.panel.url, "why-ng", "Where is it?")[-1]["type"] == "final"  # and serves the next

    # the runtime's /metrics saw the answers: outcomes counted, latencies observed
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(
        httpx.get(f"{station.http.url}/metrics").text) for s in family.samples}
    finals = sum(v for (name, labels), v in metrics.items()
                 if name == "lineguard_explanations_total" and ("outcome", "final") in labels)
    totals = [v for (name, labels), v in metrics.items()
              if name == "lineguard_explanation_seconds_count" and ("phase", "total") in labels]
    assert finals >= 2 and totals and totals[0] >= 2


def test_unknown_frame_and_bad_request(station: Station) -> None:
    replies = explain(station.panel.url, "never-seen")
    assert replies[-1]["type"] == "error" and replies[-1]["error"]["code"] == ErrorCode.UNKNOWN_FRAME
    bad = httpx.post(f"{station.panel.url}/api/explain", json={"frame_id": "", "question": "x" * 600})
    assert bad.status_code == 400


def test_operator_token_guards_why_but_not_viewing(station: Station, ng_weave: np.ndarray) -> None:
    assert station.inspect("cam1", "token-ng", ng_weave).verdict == "NG"
    settings = PanelSettings(**{**station.settings.model_dump(), "token": "correct-horse-battery"})
    with TestClient(create_app(settings), base_url="http://localhost:8080") as client:
        assert client.get("/api/session").json() == {"token_required": True}
        assert client.get("/api/gallery").status_code == 200  # viewing needs no token
        ask = {"frame_id": "token-ng", "question": "Where?"}
        assert client.post("/api/explain", json=ask).status_code == 401
        assert client.post("/api/explain", json=ask, headers={"Authorization": "Bearer wrong"}).status_code == 401
        huge = client.post("/api/explain", content=b"x" * 20_000, headers={"Authorization": "Bearer correct-horse-battery"})
        assert huge.status_code == 413  # read no further than a question needs
        with client.stream("POST", "/api/explain", json=ask,  # the scheme in any case, as the runtime reads it
                           headers={"Authorization": "bearer  correct-horse-battery"}) as response:
            assert response.status_code == 200
            assert [m for _, m in sse_messages(response)][-1]["type"] == "final"


def test_panel_on_a_curve_line_needs_an_allowed_key(llm_bundle: Path, tmp_path: Path) -> None:
    """With security.curve on, the panel's own key must be on the runtime's allow-list, granted the explanation
    port (security.curve.clients), like any client."""
    from lineguard.cli import main
    from lineguard.runtime.security.curve import CurveClientConfig

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("server", "panel", "stranger"):
        assert main(["keys", "create", name, "--out", str(keys)]) == 0
    allowed.mkdir()
    (allowed / "panel.key").write_bytes((keys / "panel.key").read_bytes())
    security = {"security": {"curve": {"server_secret_key_file": str(keys / "server.key_secret"),
                                       "allowed_clients_dir": str(allowed),
                                       # the explanation port admits only keys whose grant lists it
                                       "clients": {"panel": {"endpoints": ["verdicts", "explanations"]}}}}}

    def curve(name: str) -> CurveClientConfig:
        return CurveClientConfig(client_secret_key_file=keys / f"{name}.key_secret",
                                 server_public_key_file=keys / "server.key")

    with running_station(llm_bundle, tmp_path / "archive", line_options=security, curve=curve("panel")) as station:
        end = time.monotonic() + 15
        while not httpx.get(f"{station.panel.url}/api/state").json()["connected"]:
            assert time.monotonic() < end, "the allowed panel never heard a heartbeat"
            time.sleep(0.1)
        replies = explain(station.panel.url, "never-seen")  # through CURVE to the explanation port and back
        assert replies[-1]["error"]["code"] == ErrorCode.UNKNOWN_FRAME

        stranger = PanelSettings(**{**station.settings.model_dump(), "curve": curve("stranger"),
                                    "explain_idle_timeout_s": 2.0})
        with TestClient(create_app(stranger), base_url="http://localhost:8080") as client:
            time.sleep(1.5)  # several heartbeats went out meanwhile
            assert client.get("/api/state").json()["connected"] is False
            with client.stream("POST", "/api/explain", json={"frame_id": "never-seen"}) as response:
                reply = [m for _, m in sse_messages(response)][-1]
            assert reply["error"]["code"] == ErrorCode.TIMEOUT  # refused by the allow-list: nothing comes back
        assert station.server.heartbeat().auth_denied >= 1



def test_panel_command_serves_the_page_and_refuses_an_open_bind() -> None:
    import os
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LINEGUARD_PANEL_TOKEN"}
    refused = subprocess.run([sys.executable, "-m", "lineguard.cli", "panel", "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2 and "operator token" in refused.stderr and "Traceback" not in refused.stderr

    proc = subprocess.Popen([sys.executable, "-m", "lineguard.cli", "panel", "--runtime", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        assert page.status_code == 200 and '<script src="/static/panel.js"' in page.text
        for asset in ("panel.js", "panel.css"):
            assert httpx.get(f"http://127.0.0.1:{port}/static/{asset}").status_code == 200
        # no runtime there: the page still loads, and the gallery says why it is empty
        gallery = httpx.get(f"http://127.0.0.1:{port}/api/gallery")
        assert gallery.status_code == 502 and "did not answer" in gallery.json()["error"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_feed_starts_over_after_a_failure_and_reports_it() -> None:
    """An exception on one event used to end the feed's thread: pages froze while /healthz still said alive."""
    from lineguard.panel.feed import FeedBridge
    from lineguard.runtime.contract.heartbeat import HEARTBEAT_TOPIC, Heartbeat

    pub = zmq.Context.instance().socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    board = LineBoard()
    real_apply, seen = board.apply, []

    def flaky(event: WatchEvent, now: float | None = None) -> list:
        seen.append(event.kind)
        if len(seen) == 1:
            raise RuntimeError("a bug on one event")
        return real_apply(event, now)

    board.apply = flaky  # type: ignore[method-assign]
    bridge = FeedBridge(f"tcp://127.0.0.1:{port}", board).start()
    try:
        beat = Heartbeat(line="p", boot_id="b1", seq=0, timestamp_ns=0, interval_ms=100, uptime_s=1, ready=True)
        end = time.monotonic() + 20
        while board.heartbeat is None and time.monotonic() < end:
            beat = beat.model_copy(update={"seq": beat.seq + 1})
            pub.send_multipart([HEARTBEAT_TOPIC, beat.model_dump_json().encode()])
            time.sleep(0.1)
        assert board.heartbeat is not None and bridge.healthy and bridge.failures == 1

        board.apply = lambda event, now=None: 1 / 0  # type: ignore[method-assign]  # fails on every event now
        end = time.monotonic() + 30
        while bridge.healthy and time.monotonic() < end:
            beat = beat.model_copy(update={"seq": beat.seq + 1})
            pub.send_multipart([HEARTBEAT_TOPIC, beat.model_dump_json().encode()])
            time.sleep(0.1)
        assert bridge.alive and not bridge.healthy  # still trying, and /healthz says 503
    finally:
        bridge.stop()
        pub.close(linger=0)
    assert not bridge.alive


def test_the_page_caps_its_camera_tiles_as_the_board_does() -> None:
    import re

    from lineguard.panel.app import STATIC
    from lineguard.panel.board import MAX_CAMERAS

    script = (STATIC / "panel.js").read_text()
    assert re.search(r"const MAX_CAMERAS = (\d+);", script).group(1) == str(MAX_CAMERAS)


def test_a_loopback_panel_refuses_other_host_names_and_cross_origin_posts() -> None:
    """DNS rebinding (another site's name resolving to 127.0.0.1) and cross-site POSTs cannot reach a tokenless
    loopback panel's "Why?" through the technician's browser. No runtime is needed: refusals come first."""
    settings = PanelSettings.for_runtime("127.0.0.1", port=8080)
    for base in ("http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080"):
        with TestClient(create_app(settings), base_url=base) as client:
            assert client.get("/api/session").status_code == 200, base
    with TestClient(create_app(settings), base_url="http://attacker.example:8080") as client:
        refused = client.get("/api/session")
        assert refused.status_code == 421 and "bound to loopback" in refused.text
    with TestClient(create_app(settings), base_url="http://localhost:8080") as client:
        for origin in ("http://attacker.example", "http://localhost:9999", "null"):
            post = client.post("/api/explain", json={"frame_id": "f1"}, headers={"Origin": origin})
            assert post.status_code == 403, origin
        # the panel's own page posts with its own origin: it passes the guard (and fails later, on the body)
        own = client.post("/api/explain", content=b"{}", headers={"Origin": "http://localhost:8080"})
        assert own.status_code == 400


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_a_panel_with_a_token_takes_any_host_name_and_origin(tmp_path: Path, host: str) -> None:
    """Behind a reverse proxy (Host and Origin rewritten) the token is the guard: a forged request lacks it."""
    token = tmp_path / "token"
    token.write_text("operator-token-123456\n")
    settings = PanelSettings.for_runtime("10.1.2.3", host=host, token_file=token)
    with TestClient(create_app(settings), base_url="http://panel.press3.plant:8080") as client:
        assert client.get("/api/session").json() == {"token_required": True}
        proxied = {"Origin": "https://panel.plant:8443", "Authorization": "Bearer operator-token-123456"}
        assert client.post("/api/explain", content=b"{}", headers=proxied).status_code == 400  # past both guards
        assert client.post("/api/explain", content=b"{}", headers={"Origin": "https://evil.example"}).status_code == 401
