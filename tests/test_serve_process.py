"""``lineguard serve`` as a real process: SIGTERM drains in-flight frames; a camera survives a restart (into a
process configured by a file with flags over it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from line_helpers import free_port

from lineguard.runtime.clients.camera import CameraPusher
from lineguard.runtime.clients.watch import VerdictWatcher


class ServeProcess:
    def __init__(self, bundle: Path, ports: tuple[int, int, int], http_port: int = -1,
                 config: Path | None = None) -> None:
        self.frames, self.verdicts, inspect = (f"tcp://127.0.0.1:{p}" for p in ports)
        self.http = f"http://127.0.0.1:{http_port}"
        if config is None:  # every setting from flags, over the defaults
            flags = ["--line", "p", "--frames", self.frames, "--verdicts", self.verdicts, "--inspect", inspect]
        else:  # a line config file; the flags given override its fields (its line name among them)
            config.write_text(f"line: from-file\nendpoints:\n  frames: {self.frames}\n  verdicts: {self.verdicts}\n"
                              f"  inspect: {inspect}\ndeadline_ms: 20000\nbatching:\n  max_batch: 64\n")
            flags = ["--config", str(config), "--line", "p"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lineguard.cli", "serve", str(bundle), *flags, "--deadline-ms", "20000",
             "--max-batch", "4", "--http-port", str(http_port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, watcher: VerdictWatcher, timeout_s: float = 90.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.proc.stdout.read()
            if any(e.kind == "heartbeat" and e.heartbeat.ready for e in watcher.poll(0.5)):
                return
        pytest.fail("lineguard serve did not become ready")

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _verdicts(watcher: VerdictWatcher, want: int, timeout_s: float) -> list:
    got, end = [], time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < end:
        got += [e.verdict for e in watcher.poll(0.2) if e.kind == "verdict"]
    return got


def test_sigterm_drains_in_flight_frames(enrolled_dir: Path, weave_parts) -> None:
    server = ServeProcess(enrolled_dir, (free_port(), free_port(), free_port()))
    try:
        with VerdictWatcher(server.verdicts, prefix="verdict.p.") as watcher:
            server.wait_ready(watcher)
            with CameraPusher(server.frames, "cam0", [], product="weave") as camera:
                for i in range(6):
                    assert camera.push(weave_parts[4 + i], frame_id=f"f{i}")
                time.sleep(0.3)  # all six are in the service's queue, most not inspected yet
                assert server.terminate() == 0
            got = _verdicts(watcher, 6, 10)
        assert sorted(v.frame_id for v in got) == [f"f{i}" for i in range(6)]
        assert all(v.verdict in ("OK", "NG") for v in got)
        said = server.proc.stdout.read()  # "serving" only once bound, naming the bound addresses
        assert said.index("starting line 'p' from bundle") < said.index(f"serving line 'p': frames {server.frames}, "
                                                                         f"verdicts {server.verdicts}"), said
    finally:
        server.kill()


def test_camera_resumes_after_a_runtime_restart(enrolled_dir: Path, weave_parts, tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    first = ServeProcess(enrolled_dir, ports)
    stop = threading.Event()
    camera = CameraPusher(first.frames, "cam0", weave_parts[4:12], product="weave", fps=4, loop=True,
                          send_timeout_ms=200)
    pusher = threading.Thread(target=camera.run, args=(stop,), daemon=True)
    try:
        with VerdictWatcher(first.verdicts, prefix="verdict.p.") as watcher:
            first.wait_ready(watcher)
            pusher.start()
            assert len(_verdicts(watcher, 3, 30)) >= 3
            assert first.terminate() == 0
            # same endpoints, now from a config file: the camera keeps its connection; --line p overrides the
            # file's name, else the verdicts would go to verdict.from-file. and none would arrive here
            second = ServeProcess(enrolled_dir, ports, config=tmp_path / "line.yaml")
            try:
                second.wait_ready(watcher)
                after = _verdicts(watcher, 3, 30)
                assert len(after) >= 3, "no verdicts after the restart"
                assert second.terminate() == 0
            finally:
                second.kill()
    finally:
        stop.set()
        pusher.join(5)
        camera.close()
        first.kill()


def test_readyz_is_false_while_the_bundle_loads_then_true(enrolled_dir: Path) -> None:
    """The HTTP port opens before the bundle loads: probes see 'alive, not ready', then 'ready'."""
    import httpx

    server = ServeProcess(enrolled_dir, (free_port(), free_port(), free_port()), http_port=free_port())
    seen: list[int] = []
    try:
        end = time.monotonic() + 90
        while (not seen or seen[-1] != 200) and time.monotonic() < end:
            assert server.proc.poll() is None, server.proc.stdout.read()
            try:
                seen.append(httpx.get(f"{server.http}/readyz", timeout=2).status_code)
                assert httpx.get(f"{server.http}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.01)
        assert seen and seen[0] == 503 and seen[-1] == 200, seen
        assert set(seen) == {503, 200}
        metrics = httpx.get(f"{server.http}/metrics", timeout=2).text
        assert 'lineguard_ready{boot_id=' in metrics and "} 1.0" in metrics
        assert server.terminate() == 0
    finally:
        server.kill()

