"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineguard.runtime.line.systemd_notify import (
    SystemdNotifier,
    SystemdNotifyError,
    WatchdogLoop,
    watchdog_usec,
)


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """What systemd does for a Type=notify unit: a bound datagram socket named by $NOTIFY_SOCKET."""
    folder = Path(tempfile.mkdtemp(prefix="lg-sd-", dir="/tmp"))  # short: sun_path is 108 bytes
    path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()
    path.unlink(missing_ok=True)
    folder.rmdir()


def receive_all(sock: socket.socket, until: float) -> list[str]:
    messages = []
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    sock.settimeout(2.0)
    return messages


def test_ready_and_stopping_reach_the_socket(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier is not None and notifier.watchdog_interval_s is None
    notifier.ready("serving line press3")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=serving line press3"
    notifier.stopping()
    assert sock.recv(4096).decode() == "STOPPING=1"
    notifier.close()


def test_abstract_namespace_address() -> None:
    name = f"lineguard-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        notifier = SystemdNotifier(f"@{name}")
        notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        notifier.close()
    finally:
        sock.close()


def test_outside_systemd_there_is_no_notifier() -> None:
    assert SystemdNotifier.from_environment({}) is None
    assert WatchdogLoop(None, healthy=lambda: True).start().notified_ready.is_set() is False


def test_bad_socket_name_is_refused() -> None:
    with pytest.raises(SystemdNotifyError, match="neither a path"):
        SystemdNotifier("relative/notify.sock")


def test_watchdog_usec_only_for_this_process() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "2000000"}) == 2_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 2_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_usec({}) is None


def test_loop_says_ready_once_healthy_then_pings_only_while_healthy(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    healthy = threading.Event()
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert notifier is not None and notifier.watchdog_interval_s == pytest.approx(0.1)
    loop = WatchdogLoop(notifier, healthy=healthy.is_set, status="serving", poll_s=0.02).start()
    starting = receive_all(sock, time.monotonic() + 0.35)  # loading: fed, never READY
    assert starting and set(starting) == {"WATCHDOG=1"}
    healthy.set()
    messages = receive_all(sock, time.monotonic() + 0.1)
    assert "READY=1\nSTATUS=serving" in messages and messages[-1] in ("READY=1\nSTATUS=serving", "WATCHDOG=1")
    pings = receive_all(sock, time.monotonic() + 0.55)
    assert len(pings) >= 3 and set(pings) == {"WATCHDOG=1"}
    healthy.clear()  # a hung service: systemd must stop hearing from it
    time.sleep(0.15)
    receive_all(sock, time.monotonic() + 0.05)  # a ping already in flight when it turned unhealthy
    assert receive_all(sock, time.monotonic() + 0.35) == []
    loop.stop()
    assert sock.recv(4096).decode().startswith("STOPPING=1")
