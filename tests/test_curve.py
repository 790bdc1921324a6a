"""CURVE on the line: real sockets on loopback, a real LineServer, real keys from ``lineguard keys create``.

A client whose key is not on the allow-list (or that has no CURVE at all) pushes no frame, receives no
verdict and gets no inspect reply; each refused handshake is counted in the heartbeat. Once its public
key is in the allow-list folder, the same key pair works on its next connection, without a restart.
"""

from __future__ import annotations

import json
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from lineguard.cli import main
from lineguard.runtime.clients.camera import CameraPusher
from lineguard.runtime.clients.watch import VerdictWatcher, WatchEvent
from lineguard.runtime.contract import Verdict, encode_frame, new_header
from lineguard.runtime.line.assembly import ServerError
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.runtime.security.curve import CurveClientConfig, CurveError, CurveServerConfig, create_key_pair
from lineguard.runtime.security.curve_auth import ClientAllowList, CurveAuthority

LOOPBACK = {"frames": "tcp://127.0.0.1:*", "verdicts": "tcp://127.0.0.1:*", "inspect": "tcp://127.0.0.1:*"}
QUIET_S = 1.0  # how long a refused client is given to receive something it must not


@pytest.fixture(scope="module")
def inspector(enrolled_dir: Path) -> Inspector:
    return Inspector(enrolled_dir)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """server, cam0, watcher and intruder key pairs (made by the CLI); only watcher is allowed at first."""
    folder = tmp_path / "keys"
    for name in ("server", "cam0", "watcher", "intruder"):
        assert main(["keys", "create", name, "--out", str(folder)]) == 0
    (tmp_path / "allowed").mkdir()
    shutil.copy(folder / "watcher.key", tmp_path / "allowed")
    return folder


def client(keys: Path, name: str) -> CurveClientConfig:
    return CurveClientConfig(client_secret_key_file=keys / f"{name}.key_secret",
                             server_public_key_file=keys / "server.key")


@pytest.fixture
def curve_line(inspector: Inspector, keys: Path) -> Iterator[LineServer]:
    config = LineConfig(line="sec", endpoints=LOOPBACK, deadline_ms=30_000, heartbeat_interval_ms=100,
                        products=["weave"],
                        security={"curve": {"server_secret_key_file": str(keys / "server.key_secret"),
                                            "allowed_clients_dir": str(keys.parent / "allowed")}})
    server = LineServer(inspector, config).start(timeout_s=60)
    yield server
    server.stop(timeout_s=10)


def until(watcher: VerdictWatcher, done: Callable[[list[WatchEvent]], bool], timeout_s: float = 30.0) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    end = time.monotonic() + timeout_s
    while not done(events):
        assert time.monotonic() < end, f"timed out after {len(events)} events"
        events += watcher.poll(0.05)
    return events


def heard(watcher: VerdictWatcher, seconds: float = QUIET_S) -> list[WatchEvent]:
    """Everything a subscriber receives in ``seconds`` (heartbeats come every 100 ms when it is let in)."""
    events: list[WatchEvent] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        events += [e for e in watcher.poll(0.05) if e.kind in ("verdict", "heartbeat")]
    return events


def verdicts(events: list[WatchEvent]) -> list[Verdict]:
    return [e.verdict for e in events if e.kind == "verdict" and e.verdict is not None]


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_refused_clients_get_nothing_and_are_counted_until_their_key_is_added(
        curve_line: LineServer, keys: Path, weave_parts) -> None:
    server = curve_line
    allowed_watcher = VerdictWatcher(server.endpoints.verdicts, curve=client(keys, "watcher"))
    until(allowed_watcher, lambda ev: any(e.kind == "heartbeat" for e in ev))  # an allowed key is let in
    assert server.heartbeat().auth_denied == 0

    # a camera whose key is not allowed: its PUSH never connects, every frame is dropped on its side
    with CameraPusher(server.endpoints.frames, "cam0", [weave_parts[4]] * 3, product="weave",
                      send_timeout_ms=300, curve=client(keys, "cam0")) as refused_camera:
        assert refused_camera.run() == 0 and refused_camera.dropped == 3
    # a camera without CURVE at all, and subscribers without an allowed key
    plain_push = zmq.Context.instance().socket(zmq.PUSH)
    plain_push.setsockopt(zmq.LINGER, 0)
    plain_push.setsockopt(zmq.IMMEDIATE, 1)
    plain_push.setsockopt(zmq.SNDTIMEO, 300)
    plain_push.connect(server.endpoints.frames)
    with pytest.raises(zmq.Again):
        plain_push.send_multipart(encode_frame(new_header("cam9", "plain-1", "weave"), weave_parts[5]))
    plain_push.close()
    intruder = VerdictWatcher(server.endpoints.verdicts, curve=client(keys, "intruder"))
    plain_sub = VerdictWatcher(server.endpoints.verdicts)
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    client(keys, "intruder").secure(req)
    req.connect(server.endpoints.inspect)
    req.send_multipart(encode_frame(new_header("plc", "trigger-1", "weave"), weave_parts[6]))  # queued locally
    assert not req.poll(int(QUIET_S * 1e3)), "a refused REQ got an inspect reply"
    assert heard(intruder) == [] and heard(plain_sub) == []
    assert server.frames_in == 0 and verdicts(heard(allowed_watcher, 0.3)) == []
    denied = server.heartbeat().auth_denied
    assert denied >= 4, denied  # camera, plain camera, intruder SUB, plain SUB, intruder REQ
    beat = next(e.heartbeat for e in until(allowed_watcher, lambda ev: any(e.kind == "heartbeat" for e in ev))
                if e.kind == "heartbeat")
    assert beat.auth_denied >= 4  # published for the PLC's monitoring too
    req.close()
    intruder.close()
    plain_sub.close()

    # the camera's public key goes into the allow-list folder: its next connection is let in
    shutil.copy(keys / "cam0.key", keys.parent / "allowed")
    with CameraPusher(server.endpoints.frames, "cam0", [weave_parts[7]], product="weave", send_timeout_ms=5000,
                      curve=client(keys, "cam0")) as camera:
        assert camera.run() == 1 and camera.dropped == 0
    got = verdicts(until(allowed_watcher, lambda ev: len(verdicts(ev)) >= 1))
    assert [(v.camera_id, v.verdict) for v in got] == [("cam0", "OK")]
    assert server.frames_in == 1
    cam_watcher = VerdictWatcher(server.endpoints.verdicts, curve=client(keys, "cam0"))
    until(cam_watcher, lambda ev: any(e.kind == "heartbeat" for e in ev))
    cam_watcher.close()
    allowed_watcher.close()


def test_cli_clients_with_curve_flags(curve_line: LineServer, keys: Path, weave_parts, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server = curve_line
    shutil.copy(keys / "cam0.key", keys.parent / "allowed")
    parts = tmp_path / "parts"
    parts.mkdir()
    cv2.imwrite(str(parts / "p0.png"), weave_parts[8])
    flags = ["--curve-client-key", str(keys / "cam0.key_secret"), "--curve-server-key", str(keys / "server.key")]
    watcher = VerdictWatcher(server.endpoints.verdicts, curve=client(keys, "watcher"))
    until(watcher, lambda ev: any(e.kind == "heartbeat" for e in ev))
    assert main(["camera", "--connect", server.endpoints.frames, "--source", str(parts), "--camera-id", "cam0",
                 "--product", "weave", "--fps", "0", "--count", "1", *flags]) == 0
    assert "sent 1 frames, dropped 0" in capsys.readouterr().err
    assert [v.frame_id.startswith("cam0-") for v in verdicts(until(watcher, lambda ev: len(verdicts(ev)) >= 1))] == [True]
    assert main(["watch", "--connect", server.endpoints.verdicts, "--duration", "1", "--heartbeats", *flags]) == 0
    assert "heartbeat sec" in capsys.readouterr().out
    watcher.close()
    assert main(["watch", "--connect", server.endpoints.verdicts, "--duration", "0.1",
                 "--curve-client-key", str(keys / "cam0.key_secret")]) == 2  # both flags or neither
    assert "both" in capsys.readouterr().err


def test_bad_key_files_stop_start_up_with_the_field_named(inspector: Inspector, keys: Path) -> None:
    def line(secret: Path, allowed: Path) -> LineConfig:
        return LineConfig(line="sec", endpoints=LOOPBACK, security={"curve": {
            "server_secret_key_file": str(secret), "allowed_clients_dir": str(allowed)}})

    allowed = keys.parent / "allowed"
    with pytest.raises(ServerError, match="security.curve: .*does not exist"):
        LineServer(inspector, line(keys / "nope.key_secret", allowed))
    with pytest.raises(ServerError, match="security.curve: CURVE key file .* is a folder: name the key file in it"):
        LineServer(inspector, line(keys, allowed))
    with pytest.raises(ServerError, match="holds no secret key"):
        LineServer(inspector, line(keys / "server.key", allowed))
    with pytest.raises(ServerError, match="allowed_clients_dir .* is not a folder"):
        LineServer(inspector, line(keys / "server.key_secret", keys.parent / "missing"))


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    public, secret = create_key_pair(tmp_path, "cam1")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and public.read_text() != secret.read_text()
    assert "secret-key" in secret.read_text() and "secret-key" not in public.read_text()
    with pytest.raises(FileExistsError):
        create_key_pair(tmp_path, "cam1")
    with pytest.raises(CurveError, match="plain file name"):
        create_key_pair(tmp_path, "../cam1")
    assert main(["keys", "create", "cam1", "--out", str(tmp_path)]) == 2


def test_allow_list_follows_its_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    a_public, _ = create_key_pair(keys, "a")
    b_public, _ = create_key_pair(keys, "b")
    with caplog.at_level("WARNING", logger="lineguard.runtime.security.curve_auth"):
        allow_list = ClientAllowList(allowed)
    # an empty allow-list is legal (keys are picked up without a restart) but says that it refuses everyone
    assert any("holds no client key" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    a_key = a_public.read_text().split('public-key = "')[1][:40].encode()
    assert not allow_list.callback("*", a_key)
    shutil.copy(a_public, allowed)
    caplog.clear()
    (allowed / "junk.key").write_text("not a certificate")  # ignored, does not hide the good keys
    assert allow_list.callback("*", a_key)
    shutil.copy(b_public, allowed)
    assert len(allow_list.keys) == 2
    (allowed / "a.key").unlink()  # revoked: refused on its next connection
    assert not allow_list.callback("*", a_key)
    assert not any(r.levelname == "WARNING" and "holds no client key" in r.getMessage() for r in caplog.records)


def test_one_authenticator_per_context(keys: Path) -> None:
    config = CurveServerConfig(server_secret_key_file=keys / "server.key_secret",
                               allowed_clients_dir=keys.parent / "allowed")
    context = zmq.Context()
    first = CurveAuthority(config, context).start()
    try:
        with pytest.raises(CurveError, match="already has one"):
            CurveAuthority(config, context).start()
        unstarted = CurveAuthority(config, zmq.Context.instance())
        sock = zmq.Context.instance().socket(zmq.PULL)
        with pytest.raises(CurveError, match="start"):
            unstarted.secure(sock, "frames")
        sock.close()
    finally:
        first.stop()
        context.term()


def test_curve_is_off_by_default(inspector: Inspector, weave_parts) -> None:
    config = LineConfig(line="open", endpoints=LOOPBACK, deadline_ms=30_000)
    assert config.security.curve is None and config.security.bundle_public_key is None
    with LineServer(inspector, config) as server:
        assert server.curve is None
        req = zmq.Context.instance().socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoints.inspect)
        req.send_multipart(encode_frame(new_header("plc", "t1", "weave"), np.ascontiguousarray(weave_parts[4])))
        assert req.poll(30_000)
        assert Verdict.model_validate_json(req.recv()).verdict == "OK"
        req.close()
        assert server.heartbeat().auth_denied == 0


def test_bench_line_measures_curve(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "line.json"
    assert main(["bench", "line", "--bundle", str(bundle_dir), "--frames", "8", "--batch", "2", "--curve",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    by_mode = {r["mode"]: r for r in report["runs"]}
    assert set(by_mode) == {"direct", "zeromq", "zeromq+curve"} and by_mode["zeromq+curve"]["frames"] == 8
    ratio = report["curve_vs_plain"]["2"]
    assert ratio == pytest.approx(by_mode["zeromq+curve"]["frames_per_s"] / by_mode["zeromq"]["frames_per_s"])


def test_a_broken_allow_list_file_refuses_instead_of_killing_zap(tmp_path: Path) -> None:
    """A malformed key file is ignored, and a failing check answers 'no' (pyzmq's ZAP thread would die)."""
    from lineguard.runtime.security.curve_auth import ClientAllowList

    folder = tmp_path / "allowed"
    folder.mkdir()
    (folder / "broken.key").write_text("metadata\ncurve\n    public-key\n")  # no '=': IndexError in pyzmq
    allow = ClientAllowList(folder)
    assert allow.keys == {}
    allow.refresh = lambda: (_ for _ in ()).throw(RuntimeError("disk went away"))  # type: ignore[method-assign]
    assert allow.callback("lineguard", b"x" * 40) is False
