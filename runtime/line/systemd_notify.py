"""systemd readiness and watchdog notifications (``Type=notify``, ``WatchdogSec=``) for ``lineguard serve``.

Usage::

    from lineguard.runtime.line.systemd_notify import SystemdNotifier, WatchdogLoop
    notifier = SystemdNotifier.from_environment()      # None outside systemd (no $NOTIFY_SOCKET)
    loop = WatchdogLoop(notifier, healthy=lambda: server.ready).start()
    ...                                                 # READY=1 once healthy, then WATCHDOG=1 while healthy
    loop.stop()                                         # STOPPING=1

The protocol of sd_notify(3): one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET
(a leading ``@`` names the abstract namespace), newline-separated ``KEY=VALUE`` lines. Written here
with the standard library's socket module rather than a binding to libsystemd (python-systemd needs
libsystemd headers to build and is absent from Jetson and slim images): the protocol is one
``sendto``. $WATCHDOG_USEC is the deadline systemd enforces; pings go at half of it, and only while
the service says it is healthy, so a hung inference loop stops the pings and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class SystemdNotifyError(OSError):
    """$NOTIFY_SOCKET is set but unusable (not a path or abstract name)."""


class SystemdNotifier:
    """Sends sd_notify messages to one socket address."""

    def __init__(self, address: str, watchdog_usec: int | None = None) -> None:
        if not address or address[0] not in "/@":
            raise SystemdNotifyError(f"NOTIFY_SOCKET={address!r} is neither a path nor an abstract socket name")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = watchdog_usec
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier | None:
        """The notifier systemd asked for, or None when not started by systemd with Type=notify."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        if not address:
            return None
        return cls(address, watchdog_usec(env))

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog deadline, as sd_watchdog_enabled(3) recommends."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, **fields: str | int) -> None:
        """Send one message, e.g. ``notify(READY=1, STATUS="serving")``."""
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        self._socket.sendto(message, self.address)

    def ready(self, status: str | None = None) -> None:
        self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> None:
        self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        self._socket.close()


def watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """$WATCHDOG_USEC when it is meant for this process ($WATCHDOG_PID unset or ours), else None."""
    value = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not value or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        usec = int(value)
    except ValueError:
        return None
    return usec if usec > 0 else None


class WatchdogLoop:
    """A thread: READY=1 once ``healthy()`` first holds, then WATCHDOG=1 every interval while it holds
    (and during start-up, which TimeoutStartSec bounds)."""

    def __init__(self, notifier: SystemdNotifier | None, healthy: Callable[[], bool], status: str = "serving",
                 poll_s: float = 0.1) -> None:
        self.notifier = notifier
        self.healthy = healthy
        self.status = status
        self.poll_s = poll_s
        self.notified_ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WatchdogLoop:
        if self.notifier is not None:
            self._thread = threading.Thread(target=self._run, name="systemd-notify", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        notifier = self.notifier
        assert notifier is not None
        interval = notifier.watchdog_interval_s
        try:
            # Start-up (bundle load, warm-up, TensorRT engines) is bounded by TimeoutStartSec, not by the
            # watchdog: keep it fed until ready, whatever systemd's version counts from.
            last_ping = time.monotonic()
            while not self._stop.wait(self.poll_s):
                if self.healthy():
                    notifier.ready(self.status)
                    self.notified_ready.set()
                    break
                if interval and time.monotonic() - last_ping >= interval:
                    notifier.watchdog()
                    last_ping = time.monotonic()
            while interval and not self._stop.wait(interval):
                if self.healthy():
                    notifier.watchdog()
                else:
                    log.warning("service unhealthy: withholding the systemd watchdog ping")
        except OSError as exc:  # systemd went away: nothing to tell any more
            log.warning("systemd notification failed: %s", exc)

    def stop(self, status: str = "draining in-flight frames") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.notifier is not None:
            try:
                self.notifier.stopping(status)
            except OSError as exc:
                log.warning("systemd notification failed: %s", exc)
            self.notifier.close()
