"""The server half of CURVE: a ZAP allow-list of client keys, and a count of the peers it refused.

Usage::

    from lineguard.runtime.security.curve import CurveServerConfig
    from lineguard.runtime.security.curve_auth import CurveAuthority

    context = zmq.Context()                               # one authenticator per context
    authority = CurveAuthority(CurveServerConfig(server_secret_key_file="keys/server.key_secret",
                                                 allowed_clients_dir="keys/clients"), context).start()
    sock = context.socket(zmq.PULL)
    authority.secure(sock, "frames")                      # before bind: CURVE server, handshakes watched
    sock.bind("tcp://*:5555")
    ...
    authority.denied                                      # refused handshakes so far (heartbeat auth_denied)
    authority.stop()                                      # after every secured socket is closed

Three parts, each from pyzmq's documented API:

* :class:`ClientAllowList` is a ``zmq.auth`` credentials provider (``configure_curve_callback``): a client
  is let in when its public key is one of the ``*.key`` files in ``allowed_clients_dir``. The folder is
  re-read whenever its listing changes, so adding a key lets that client in on its next connection and
  removing one refuses its next connection (connections already established stay up). libzmq does not
  retry a handshake that ZAP refused: a refused client reconnects (is restarted) after its key is added.
* ``zmq.auth.thread.ThreadAuthenticator`` answers the ZAP requests libzmq makes for every CURVE handshake.
* :class:`HandshakeCounter` watches every secured socket (``zmq_socket_monitor``) and counts failed
  handshakes: a key not on the allow-list (ZAP said 400), a client without CURVE, a client that has the
  wrong server key. Refused peers get nothing: no frame of theirs is read and no verdict reaches them.

Each endpoint has a ZAP domain of its own (``lineguard.frames``, ``lineguard.verdicts``, ...), so the allow-list
also checks the key's grant (``security.curve.clients``): a key may be let into some endpoints only. ZAP answers
with the key's name (``cam0`` for ``cam0.key``) as the connection's User-Id, so every message read from that
peer carries it (``frame.get("User-Id")``): the server checks the cameras a frame claims against it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from lineguard.runtime.security.curve import (
    ENDPOINT_NAMES,
    PUBLIC_SUFFIX,
    ClientGrant,
    CurveError,
    CurveServerConfig,
    load_secret_key,
    require_curve,
)

log = logging.getLogger(__name__)

ZAP_DOMAIN = "lineguard"  # secured sockets use ZAP domain "lineguard.<endpoint>"; the allow-list answers for them
UNKNOWN_CLIENT = "?"  # User-Id of a peer whose key left the allow-list between handshake and lookup


def zap_domain(endpoint: str) -> str:
    """The ZAP domain of one endpoint's socket (``lineguard.frames``)."""
    return f"{ZAP_DOMAIN}.{endpoint}"
FAILED_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class ClientAllowList:
    """The public keys of the ``*.key`` files in a folder, re-read when the folder's listing changes.

    ``callback(domain, key)`` is the credentials-provider hook of ``zmq.auth`` (``key`` in Z85). With
    ``grant_for`` (key name -> ClientGrant) a key is let into an endpoint's domain only when its grant lists it.
    """

    def __init__(self, folder: str | os.PathLike[str],
                 grant_for: Callable[[str], ClientGrant] | None = None) -> None:
        self.folder = Path(folder)
        self.grant_for = grant_for
        if not self.folder.is_dir():
            raise CurveError(f"allowed_clients_dir {self.folder} is not a folder (put clients' public NAME.key files there)")
        self._lock = threading.Lock()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._keys: dict[bytes, str] = {}
        self.refresh()

    def _listing(self) -> tuple[tuple[str, int, int], ...]:
        listing = []
        try:
            for e in os.scandir(self.folder):
                if e.name.endswith(PUBLIC_SUFFIX) and e.is_file():
                    info = e.stat()
                    listing.append((e.name, info.st_mtime_ns, info.st_size))
        except OSError as exc:  # includes a key removed between listing and stat
            log.error("cannot list the CURVE allow-list %s: %s; refusing every client", self.folder, exc)
            return ()
        return tuple(sorted(listing))

    def refresh(self) -> None:
        """Re-read the folder if a key file was added, removed or changed since the last read."""
        listing = self._listing()
        with self._lock:
            if listing == self._signature:
                return
            keys: dict[bytes, str] = {}
            for name, _, _ in listing:
                try:
                    public, _ = zmq.auth.load_certificate(self.folder / name)
                except (OSError, ValueError, IndexError) as exc:  # IndexError: a line without '='
                    log.warning("allow-list file %s is not a ZeroMQ certificate (%s); ignored", name, exc)
                    continue
                keys[public] = name
            self._keys, self._signature = keys, listing
        if keys:
            log.info("CURVE allow-list %s: %d client key(s)", self.folder, len(keys))
        else:  # legal (keys may be copied in later, no restart needed), but every client is refused until then
            log.warning("CURVE allow-list %s holds no client key (NAME%s): every camera, subscriber and panel is "
                        "refused until one is copied there (`lineguard keys create NAME`)", self.folder, PUBLIC_SUFFIX)

    @property
    def keys(self) -> dict[bytes, str]:
        """Allowed Z85 public keys -> the file each came from (as the folder is now)."""
        self.refresh()
        with self._lock:
            return dict(self._keys)

    def name_of(self, key: bytes) -> str | None:
        """The name (file stem: ``cam0`` for ``cam0.key``) of an allowed Z85 public key, else None."""
        with self._lock:
            file = self._keys.get(key)
        return file.removesuffix(PUBLIC_SUFFIX) if file is not None else None

    def callback(self, domain: str, key: bytes) -> bool:
        # pyzmq runs this on its ZAP thread without a guard: an exception there would end that thread and
        # every later handshake would hang. Whatever goes wrong, the answer is a refusal.
        try:
            self.refresh()
            name = self.name_of(key)
            endpoint = domain.removeprefix(f"{ZAP_DOMAIN}.")
            granted = (name is not None and (self.grant_for is None or endpoint not in ENDPOINT_NAMES
                                             or endpoint in self.grant_for(name).endpoints))
        except Exception:
            log.exception("CURVE allow-list check failed; refusing the client")
            return False
        if name is None:
            log.warning("refused a CURVE client whose key %s is not in %s", key.decode(errors="replace"), self.folder)
            return False
        if not granted:
            log.warning("refused CURVE client %s on %s: not among its endpoints (security.curve.clients)", name, endpoint)
            return False
        log.debug("CURVE client %s allowed on %s", name, endpoint)
        return True


class NamingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, answering with the client key's name as User-Id (pyzmq's default: the Z85 key)."""

    def __init__(self, context: zmq.Context, allow_list: ClientAllowList, log: logging.Logger | None = None) -> None:
        super().__init__(context, log=log)
        self.allow_list = allow_list

    def curve_user_id(self, client_public_key: bytes) -> str:
        # called on the ZAP thread after the callback let the key in; must not raise
        try:
            return self.allow_list.name_of(z85.encode(client_public_key)) or UNKNOWN_CLIENT
        except Exception:
            return UNKNOWN_CLIENT


class HandshakeCounter:
    """Counts failed handshakes on watched sockets, on a thread of its own (socket monitors)."""

    def __init__(self, context: zmq.Context) -> None:
        self.context = context
        self.reasons: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._new: queue.SimpleQueue[tuple[zmq.Socket, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="curve-handshakes", daemon=True)

    @property
    def denied(self) -> int:
        with self._lock:
            return sum(self.reasons.values())

    def start(self) -> HandshakeCounter:
        self._thread.start()
        return self

    def watch(self, sock: zmq.Socket, name: str) -> None:
        """Report ``sock``'s failed handshakes; call from the thread that owns ``sock``, before bind."""
        address = f"inproc://lineguard-handshakes-{uuid.uuid4().hex}"
        sock.monitor(address, FAILED_HANDSHAKE_EVENTS)
        monitor = self.context.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)  # connected before any peer can arrive, so no event is lost
        self._new.put((monitor, name))  # the queue hands the socket over to the counting thread

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        while not self._new.empty():  # watched but never picked up
            self._new.get_nowait()[0].close()

    def _run(self) -> None:
        poller = zmq.Poller()
        names: dict[zmq.Socket, str] = {}
        try:
            while not self._stop.is_set():
                while not self._new.empty():
                    monitor, name = self._new.get_nowait()
                    names[monitor] = name
                    poller.register(monitor, zmq.POLLIN)
                for monitor in dict(poller.poll(50)):
                    self._count(recv_monitor_message(monitor), names[monitor])
        finally:
            for monitor in names:
                monitor.close()

    def _count(self, event: dict, endpoint_name: str) -> None:
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            reason = "key_not_allowed"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            reason = "protocol"  # no CURVE, wrong server key, malformed handshake
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            reason = "no_detail"
        else:
            return
        with self._lock:
            self.reasons[reason] += 1
        log.warning("%s: refused a peer (%s, code %s) on %s", endpoint_name, reason, value,
                    event["endpoint"].decode(errors="replace"))


class CurveAuthority:
    """Server keys, the ZAP allow-list and the handshake counter of one ZeroMQ context."""

    def __init__(self, config: CurveServerConfig, context: zmq.Context) -> None:
        require_curve()
        self.config = config
        self.context = context
        self.public_key, self._secret_key = load_secret_key(config.server_secret_key_file)
        self.allow_list = ClientAllowList(config.allowed_clients_dir, grant_for=config.grant_for)
        self.counter = HandshakeCounter(context)
        self._authenticator: NamingAuthenticator | None = None

    @property
    def denied(self) -> int:
        """Handshakes refused so far (every reason)."""
        return self.counter.denied

    def start(self) -> CurveAuthority:
        """Bind the context's ZAP handler; raises CurveError when the context already has one."""
        authenticator = NamingAuthenticator(self.context, self.allow_list, log=logging.getLogger("lineguard.zap"))
        try:
            authenticator.start()
        except zmq.ZMQError as exc:
            authenticator.stop()
            raise CurveError(f"cannot start the ZAP handler ({exc}): this ZeroMQ context already has one; "
                             "give each CURVE server its own context") from None
        for endpoint in ENDPOINT_NAMES:
            authenticator.configure_curve_callback(zap_domain(endpoint), credentials_provider=self.allow_list)
        self._authenticator = authenticator
        self.counter.start()
        return self

    def secure(self, sock: zmq.Socket, name: str) -> zmq.Socket:
        """Make ``sock`` a CURVE server whose clients ZAP checks for endpoint ``name``; call before ``bind``."""
        if name not in ENDPOINT_NAMES:
            raise CurveError(f"unknown endpoint {name!r}: one of {', '.join(ENDPOINT_NAMES)}")
        if self._authenticator is None:
            raise CurveError("start() the authority before securing sockets: without a ZAP handler libzmq "
                             "would let every CURVE client in")
        sock.curve_secretkey = self._secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True
        sock.zap_domain = zap_domain(name).encode()
        self.counter.watch(sock, name)
        return sock

    def grant(self, client: str) -> ClientGrant:
        """What the key named ``client`` (a message's User-Id) may do."""
        return self.config.grant_for(client)

    def stop(self) -> None:
        """Stop counting and answering ZAP; call once every secured socket is closed."""
        self.counter.stop()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
