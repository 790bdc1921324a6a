"""Attacks on a real ``lineguard serve`` process with CURVE on, each refused (issue 15 part 1).

One process serves a line whose keys come from the install step (``lineguard keys init``) plus ``keys create``:

* ``cam0``   allowed, not listed in ``security.curve.clients``: frames/verdicts/inspect, camera ``cam0`` only;
* ``line``   listed: frames, verdicts and inspect for cameras ``cam1`` and ``cam10``;
* ``panel``  made and allowed by ``keys init``, listed: verdicts and explanations only;
* ``intruder`` a key pair nobody allowed.

Refused: an unknown key or no CURVE at all (nothing read, nothing received, counted ``auth_denied``); a known key
claiming another camera (``ERROR``/``CAMERA_NOT_ALLOWED``, counted ``camera_denied``, never on that camera's
topic); a key on an endpoint its grant does not list; a message beyond the line's limits (libzmq drops the
peer before buffering it: the server's RSS stays flat); the archive routes without the HTTP token; a topic
prefix matching another camera. The explanation port, with the bundle's LLM, answers only the panel's key.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import yaml
import zmq
from line_helpers import free_port

from lineguard.child_process import stop_process
from lineguard.cli import build_parser, main
from lineguard.cli.serve import serve_config
from lineguard.runtime.clients.watch import VerdictWatcher
from lineguard.runtime.contract import (
    ExplainReply,
    ExplainRequest,
    Heartbeat,
    Verdict,
    encode_frame,
    new_header,
)
from lineguard.runtime.security.curve import CurveClientConfig

QUIET_S = 1.0  # how long a refused peer is given to receive something it must not
MIB = 1024 * 1024


class SecureLine:
    """``lineguard serve BUNDLE --config line.yaml`` with CURVE on, on loopback ports."""

    def __init__(self, bundle: Path, folder: Path, llm: bool = False) -> None:
        self.keys = folder / "keys"
        assert main(["keys", "init", str(self.keys)]) == 0  # the install step: server, panel, clients/, http.token
        for name in ("cam0", "line", "intruder"):
            assert main(["keys", "create", name, "--out", str(self.keys)]) == 0
        for name in ("cam0", "line"):
            shutil.copy(self.keys / f"{name}.key", self.keys / "clients")
        ports = {name: free_port() for name in ("frames", "verdicts", "inspect", "explanations", "http")}
        self.endpoints = {name: f"tcp://127.0.0.1:{ports[name]}" for name in ("frames", "verdicts", "inspect",
                                                                                "explanations")}
        self.http = f"http://127.0.0.1:{ports['http']}"
        config = {
            "line": "sec", "endpoints": self.endpoints, "products": ["weave"], "deadline_ms": 20000,
            "heartbeat_interval_ms": 200, "batching": {"max_batch": 2},
            "limits": {"max_payload_bytes": MIB},  # 224x224x3 frames fit; the oversize attack sends 64 MiB
            "archive": {"dir": str(folder / "archive"), "ok_sample_every": 1},
            "security": {"curve": {
                "server_secret_key_file": str(self.keys / "server.key_secret"),
                "allowed_clients_dir": str(self.keys / "clients"),
                "clients": {"line": {"endpoints": ["frames", "verdicts", "inspect"], "cameras": ["cam1", "cam10"]},
                            "panel": {"endpoints": ["verdicts", "explanations"]}}}},
            "http": {"host": "127.0.0.1", "port": ports["http"], "token_file": str(self.keys / "http.token")},
            "explanations": {"enabled": llm},
        }
        self.config = folder / "line.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen([sys.executable, "-m", "lineguard.cli", "serve", str(bundle), "--config",
                                      str(self.config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.watcher = VerdictWatcher(self.endpoints["verdicts"], curve=self.client("line"))
        self.beat: Heartbeat | None = None
        end = time.monotonic() + 120
        while self.beat is None or not self.beat.ready:
            assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
            assert time.monotonic() < end, "lineguard serve did not become ready"
            self.events(0.2)

    def client(self, name: str) -> CurveClientConfig:
        return CurveClientConfig(client_secret_key_file=self.keys / f"{name}.key_secret",
                                 server_public_key_file=self.keys / "server.key")

    def events(self, seconds: float) -> list[Verdict]:
        """Verdicts the ``line`` key's subscriber receives in ``seconds``; keeps the latest heartbeat."""
        verdicts: list[Verdict] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for event in self.watcher.poll(0.05):
                if event.kind == "heartbeat" and event.heartbeat is not None:
                    self.beat = event.heartbeat
                elif event.kind == "verdict" and event.verdict is not None:
                    verdicts.append(event.verdict)
        return verdicts

    def fresh_beat(self) -> Heartbeat:
        """A heartbeat sent after this call (its counters include everything before it)."""
        assert self.beat is not None
        seq = self.beat.seq
        end = time.monotonic() + 10
        while self.beat.seq <= seq + 1:
            assert time.monotonic() < end, "no heartbeat"
            self.events(0.1)
        return self.beat

    def socket(self, kind: int, endpoint: str, key: str | None, **options: int) -> zmq.Socket:
        sock = zmq.Context.instance().socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            sock.setsockopt(getattr(zmq, option), value)
        if key is not None:
            self.client(key).secure(sock)
        sock.connect(self.endpoints[endpoint])
        return sock

    def stop(self) -> None:
        self.watcher.close()
        stop_process(self.proc)


@pytest.fixture(scope="module")
def line(enrolled_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureLine]:
    served = SecureLine(enrolled_dir, tmp_path_factory.mktemp("secure-line"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def part(weave_parts: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(weave_parts[4])


def frame(camera: str, frame_id: str, image: np.ndarray) -> list[bytes]:
    return encode_frame(new_header(camera, frame_id, "weave"), image)


def test_unknown_keys_and_plain_peers_get_nothing(line: SecureLine, part: np.ndarray) -> None:
    before = line.fresh_beat()
    for key in ("intruder", None):  # a key nobody allowed, and no CURVE at all
        push = line.socket(zmq.PUSH, "frames", key, IMMEDIATE=1, SNDTIMEO=500)
        with pytest.raises(zmq.Again):  # the handshake was refused: no connection to send on
            push.send_multipart(frame("cam1", f"forged-{key}", part))
        push.close()
        sub = line.socket(zmq.SUB, "verdicts", key)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        req = line.socket(zmq.REQ, "inspect", key)
        req.send_multipart(frame("cam1", f"trigger-{key}", part))  # queued locally, never delivered
        assert not sub.poll(int(QUIET_S * 1e3)), "a refused subscriber received something"
        assert not req.poll(100), "a refused REQ got an inspect reply"
        sub.close()
        req.close()
    assert [v.frame_id for v in line.events(0.5)] == []
    after = line.fresh_beat()
    assert after.frames_in == before.frames_in  # not one message of theirs was read
    assert after.auth_denied >= before.auth_denied + 4  # PUSH, SUB and REQ of each, counted


def test_a_key_may_speak_only_for_its_own_cameras(line: SecureLine, part: np.ndarray) -> None:
    before = line.fresh_beat()
    push = line.socket(zmq.PUSH, "frames", "cam0", SNDTIMEO=5000)
    push.send_multipart(frame("cam1", "forged-as-cam1", part))  # cam0's key claims cam1
    push.send_multipart(frame("cam0", "own-0", part))  # its own camera: judged as ever
    req = line.socket(zmq.REQ, "inspect", "cam0")
    req.send_multipart(frame("cam10", "forged-trigger", part))
    assert req.poll(30_000), "no inspect reply"
    reply = Verdict.model_validate_json(req.recv())
    assert reply.verdict == "ERROR" and reply.error is not None and reply.error.code == "CAMERA_NOT_ALLOWED"
    assert "'cam0' may not speak for camera 'cam10'" in reply.error.message
    # a malformed frame claiming another camera is refused for the claim, never published on that topic
    push.send_multipart([json.dumps({"camera_id": "cam1", "frame_id": "forged-bad", "surprise": 1}).encode(), b"x"])
    got: list[Verdict] = []
    end = time.monotonic() + 60
    while "own-0" not in [v.frame_id for v in got]:
        assert time.monotonic() < end, got
        got += line.events(0.2)
    got += line.events(0.5)
    assert [(v.camera_id, v.frame_id, v.verdict) for v in got] == [("cam0", "own-0", "OK")]
    after = line.fresh_beat()
    assert after.camera_denied == before.camera_denied + 3
    assert after.errors.get("CAMERA_NOT_ALLOWED", 0) == before.errors.get("CAMERA_NOT_ALLOWED", 0) + 3
    metrics = httpx.get(f"{line.http}/metrics", timeout=5).text  # open: probes and scrapers need no token
    assert f'lineguard_camera_denied_total{{boot_id="{after.boot_id}",line="sec"}} {after.camera_denied}.0' in metrics
    # the panel's key is let into verdicts and explanations only: its frames are refused at the handshake
    panel = line.socket(zmq.PUSH, "frames", "panel", IMMEDIATE=1, SNDTIMEO=500)
    with pytest.raises(zmq.Again):
        panel.send_multipart(frame("cam0", "panel-as-cam0", part))
    panel.close()
    push.close()
    req.close()


def test_an_oversize_message_is_dropped_before_it_is_buffered(line: SecureLine, part: np.ndarray) -> None:
    server = psutil.Process(line.proc.pid)
    line.fresh_beat()
    baseline = server.memory_info().rss
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak.append(server.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = line.fresh_beat()
    huge = np.zeros((4096, 4096, 4), np.uint8)  # 64 MiB against a 1 MiB payload limit
    push = line.socket(zmq.PUSH, "frames", "cam0", SNDTIMEO=5000)
    for i in range(4):
        push.send_multipart(encode_frame(new_header("cam0", f"huge-{i}", "weave"), huge))
    time.sleep(3.0)  # libzmq sends, the server disconnects at each oversize header; the camera reconnects
    sampling.set()
    sampler.join(5)
    push.close()
    del huge
    grew_mib = (max(peak) - baseline) / MIB
    assert grew_mib < 32, f"the server's RSS grew {grew_mib:.0f} MiB while 256 MiB were offered"
    after = line.fresh_beat()
    assert after.frames_in == before.frames_in  # never read: dropped by ZeroMQ, not answered
    # the line is unharmed: the same key's next frame is judged
    ok = line.socket(zmq.PUSH, "frames", "cam0", SNDTIMEO=5000)
    ok.send_multipart(frame("cam0", "after-oversize", part))
    got: list[Verdict] = []
    end = time.monotonic() + 60
    while not got:
        assert time.monotonic() < end, "no verdict after the oversize messages"
        got += line.events(0.2)
    assert [(v.frame_id, v.verdict) for v in got] == [("after-oversize", "OK")]
    ok.close()


def test_a_camera_prefix_never_matches_another_camera(line: SecureLine, part: np.ndarray) -> None:
    sub = line.socket(zmq.SUB, "verdicts", "line")
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict.sec.cam1.")  # what a PLC for cam1 subscribes to
    line.fresh_beat()
    time.sleep(0.3)  # the subscription reaches the publisher
    push = line.socket(zmq.PUSH, "frames", "line", SNDTIMEO=5000)
    push.send_multipart(frame("cam10", "ten-0", part))
    push.send_multipart(frame("cam1", "one-0", part))
    assert sub.poll(60_000)
    topic, body = sub.recv_multipart()
    assert topic == b"verdict.sec.cam1." and Verdict.model_validate_json(body).frame_id == "one-0"
    assert not sub.poll(int(QUIET_S * 1e3)), "cam10's verdict reached cam1's subscriber"
    push.close()
    sub.close()


def test_the_archive_needs_the_token(line: SecureLine) -> None:
    token = (line.keys / "http.token").read_text().strip()
    assert httpx.get(f"{line.http}/api/frames", timeout=5).status_code == 401
    assert httpx.get(f"{line.http}/api/frames", headers={"Authorization": "Bearer wrong-token-123"},
                     timeout=5).status_code == 401
    assert httpx.get(f"{line.http}/api/frames/cam0/own-0/overlay.jpg", timeout=5).status_code == 401
    answer = httpx.get(f"{line.http}/api/frames", params={"verdict": "all"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 200 and isinstance(answer.json(), list)
    assert httpx.get(f"{line.http}/healthz", timeout=5).status_code == 200  # probes need no token


def test_open_binds_are_refused_at_start(enrolled_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without CURVE only loopback binds start (a local try-out); the refusal comes before the bundle loads."""
    assert main(["serve", str(enrolled_dir), "--frames", "tcp://*:5555", "--http-port", "-1"]) == 2
    assert "endpoints.frames: tcp://*:5555 binds beyond this machine without CURVE" in capsys.readouterr().err
    assert main(["serve", str(enrolled_dir), "--http-host", "0.0.0.0"]) == 2
    assert "http.host: 0.0.0.0" in capsys.readouterr().err
    config = serve_config(build_parser().parse_args(["serve", str(enrolled_dir)]))  # no flags, no file: the defaults
    endpoints = config.endpoints
    assert {endpoints.frames, endpoints.verdicts, endpoints.inspect, endpoints.explanations} == {
        "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5558", "tcp://127.0.0.1:5557"}
    assert config.http is not None and config.http.host == "127.0.0.1"


def test_keys_init_is_an_idempotent_install_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"
    assert main(["keys", "init", str(folder), "--client", "plc"]) == 0
    made = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert made == {"server.key", "server.key_secret", "panel.key", "panel.key_secret", "plc.key", "plc.key_secret",
                    "clients/panel.key", "clients/plc.key", "http.token"}
    assert (folder / "http.token").stat().st_mode & 0o077 == 0 and (folder / "server.key_secret").stat().st_mode & 0o077 == 0
    snapshot = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["keys", "init", str(folder), "--client", "plc"]) == 0  # again: nothing replaced
    assert "0 files created" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == snapshot


def test_the_explanation_port_answers_only_the_panels_key(llm_bundle: Path, tmp_path: Path) -> None:
    served = SecureLine(llm_bundle, tmp_path, llm=True)
    try:
        request = ExplainRequest(frame_id="no-such-frame").model_dump_json().encode()
        for key in (None, "intruder", "cam0"):  # no CURVE, an unknown key, a known key not granted the port
            dealer = served.socket(zmq.DEALER, "explanations", key)
            dealer.send(request)
            assert not dealer.poll(int(QUIET_S * 1e3)), f"the explanation port answered {key or 'a plain peer'}"
            dealer.close()
        panel = served.socket(zmq.DEALER, "explanations", "panel")
        panel.send(request)
        assert panel.poll(30_000), "the panel's key got no answer"
        reply = ExplainReply.model_validate_json(panel.recv())
        assert reply.type == "error" and reply.error is not None and reply.error.code == "UNKNOWN_FRAME"
        panel.close()
        assert served.fresh_beat().auth_denied >= 3
    finally:
        served.stop()


def test_an_unanswered_explanation_says_keys_may_be_missing() -> None:
    from lineguard.runtime.clients.explain import ask

    with pytest.raises(TimeoutError, match="answers only keys granted its explanation port"):
        list(ask(f"tcp://127.0.0.1:{free_port()}", "f1", idle_timeout_s=0.2))
