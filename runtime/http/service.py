"""The runtime's own HTTP port: health, readiness, Prometheus metrics and the NG archive, for a line with
or without the panel.

Usage::

    http = RuntimeHttpService(HttpEndpoint(host="127.0.0.1", port=8081)).start()   # up before the bundle loads
    server = LineServer.from_bundle(bundle, config)                               # /readyz: 503 meanwhile
    http.attach(server)                                                           # /readyz: 200 once serving
    ...
    http.stop()

Routes (Triton-style: health and metrics are first-class, not an afterthought):

* ``GET /healthz``  200 while the process is alive and its serving loop turns (liveness probe): 503 once
  the loop died or has not gone round for three heartbeat intervals.
* ``GET /readyz``   200 ``{"ready": true, "checks": {...}}`` once the bundle is loaded, the sockets bound and
  the workers up; 503 with the failing checks otherwise (readiness probe, load balancers).
* ``GET /metrics``  Prometheus text format (``prometheus-client``), see ``runtime/line/metrics.py``.
* ``GET /api/frames?verdict=NG&limit=24``  the newest archived verdicts, each with ``archived_at`` (Unix s):
  the panel's NG gallery.
* ``GET /api/overlay.jpg?camera_id=&frame_id=``  the frame with its anomaly heatmap (OpenCV), for any ids;
  ``GET /api/frames/{camera_id}/{frame_id}/overlay.jpg`` the same for ids without "/". Not cached: a
  camera that restarts its counter archives new parts under old ids.

Everything here only reads; ids from the URL are looked up through the archive's hashed index, never
used as paths. The server binds its socket in ``start()`` so a port in use fails there, loudly.

``/api/frames*`` and ``/api/overlay.jpg`` show archived part images: with ``http.token_file`` set they need
``Authorization: Bearer TOKEN`` (health, readiness and metrics stay open for probes and scrapers), and a
bind beyond loopback without a token is refused at start (unless the line says ``security: insecure``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from lineguard.runtime.contract import ArchivedVerdict, Readiness
from lineguard.runtime.http.bearer import bearer_matches
from lineguard.runtime.http.overlay import overlay_jpeg
from lineguard.runtime.line.config import HttpEndpoint, is_loopback_host

if TYPE_CHECKING:
    from lineguard.runtime.line.server import LineServer

log = logging.getLogger(__name__)

MAX_GALLERY = 200
VERDICT_FILTERS = ("NG", "OK", "all")
MIN_TOKEN_CHARS = 12


class HttpServiceError(RuntimeError):
    """The HTTP port could not be opened."""


class UvicornThread:
    """An ASGI app served by uvicorn on a background thread, its socket bound up front.

    Binding here (not inside uvicorn) makes a port in use fail in ``start()`` with a clear error, and
    port 0 report the port it got. uvicorn installs signal handlers only on the main thread, so the
    process's own handlers (``lineguard serve``'s SIGTERM drain) stay in charge.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, name: str = "http") -> None:
        self.app, self.host, self.name = app, host, name
        self.requested_port = port
        self.port: int | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> UvicornThread:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise HttpServiceError(f"cannot open the {self.name} port {self.host}:{self.requested_port}: "
                                   f"{exc.strerror or exc}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]}, name=self.name,
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise HttpServiceError(f"the {self.name} port {self.url} did not start")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        host = self.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(5)


def read_token(path: Path) -> str:
    """A bearer token from its file (``lineguard keys init`` writes one); HttpServiceError when unusable."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise HttpServiceError(f"cannot read the HTTP token file {path}: {exc.strerror or exc}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise HttpServiceError(f"the HTTP token in {path} is shorter than {MIN_TOKEN_CHARS} characters")
    return token


class RuntimeHttpService:
    def __init__(self, endpoint: HttpEndpoint, allow_open: bool = False) -> None:
        """``allow_open``: serve /api/frames beyond loopback without a token (``security: insecure``)."""
        self.endpoint = endpoint
        self.token = read_token(endpoint.token_file) if endpoint.token_file is not None else None
        if self.token is None and not allow_open and not is_loopback_host(endpoint.host):
            raise HttpServiceError(f"the HTTP port binds {endpoint.host}, beyond this machine, and serves archived "
                                   "part images: set http.token_file or bind 127.0.0.1")
        self.server: LineServer | None = None
        # Before a line is attached /metrics still answers (lineguard_ready 0), so scrapers see the boot.
        self._booting = CollectorRegistry()
        Gauge("lineguard_ready", "1 when the models are loaded and the sockets bound",
              registry=self._booting).set(0)
        self.app = Starlette(routes=[
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics),
            Route("/api/frames", self.frames),
            Route("/api/overlay.jpg", self.overlay),  # ?camera_id=&frame_id=: any ids, "/" and ".." included
            Route("/api/frames/{camera_id}/{frame_id}/overlay.jpg", self.overlay),  # ids without "/"
        ])
        self._server: UvicornThread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def attach(self, server: LineServer) -> None:
        """From now on health, readiness and metrics are those of this line server."""
        self.server = server

    def start(self, timeout_s: float = 10.0) -> RuntimeHttpService:
        self._server = UvicornThread(self.app, self.endpoint.host, self.endpoint.port, "http").start(timeout_s)
        log.info("health and metrics on %s (/healthz /readyz /metrics)", self.url)
        return self

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    @property
    def url(self) -> str:
        if self._server is None:
            raise HttpServiceError("the HTTP port is not open yet")
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> RuntimeHttpService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- routes -------------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        if self.server is not None and self.server.loop_failed:
            return JSONResponse({"alive": False, "reason": "the serving loop ended on an error"}, 503)
        if self.server is not None and self.server.ready and not self.server.loop_turning():
            return JSONResponse({"alive": False, "reason": "the serving loop is stuck"}, 503)
        return JSONResponse({"alive": True})

    async def readyz(self, request: Request) -> Response:
        checks = {"bundle_loaded": False} if self.server is None else self.server.readiness()
        answer = Readiness(ready=all(checks.values()), checks=checks)
        return JSONResponse(answer.model_dump(), 200 if answer.ready else 503)

    async def metrics(self, request: Request) -> Response:
        registry = self.server.metrics.registry if self.server is not None else self._booting
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def _refused(self, request: Request) -> Response | None:
        """401 unless the request carries the token (when one is set)."""
        if self.token is None:
            return None
        if bearer_matches(request.headers.get("authorization", ""), self.token):
            return None
        return JSONResponse({"error": "the archive needs Authorization: Bearer TOKEN (http.token_file)"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})

    async def frames(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        archive = self.server.archive if self.server is not None else None
        if archive is None:
            return JSONResponse({"error": "this line keeps no archive (archive.dir in the line config)"}, 404)
        kind = request.query_params.get("verdict", "NG")
        try:
            limit = int(request.query_params.get("limit", "24"))
        except ValueError:
            limit = -1
        if kind not in VERDICT_FILTERS or not 1 <= limit <= MAX_GALLERY:
            return JSONResponse({"error": f"verdict must be one of {VERDICT_FILTERS}, limit 1..{MAX_GALLERY}"}, 400)
        verdicts = await run_in_threadpool(archive.recent, limit, None if kind == "all" else kind)
        return JSONResponse([ArchivedVerdict(**v.model_dump(), archived_at=at).model_dump(mode="json")
                             for v, at in verdicts])

    async def overlay(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        archive = self.server.archive if self.server is not None else None
        if archive is None:
            return JSONResponse({"error": "this line keeps no archive"}, 404)
        ids = request.path_params or request.query_params
        camera_id, frame_id = ids.get("camera_id"), ids.get("frame_id")
        if not camera_id or not frame_id:
            return JSONResponse({"error": "name the frame: ?camera_id=CAMERA&frame_id=FRAME"}, 400)
        frame = await run_in_threadpool(archive.load, camera_id, frame_id)
        if frame is None:
            return JSONResponse({"error": "no such archived frame"}, 404)
        jpeg = await run_in_threadpool(overlay_jpeg, frame)
        # not cached: a camera that restarts its frame counter archives new parts under old ids
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-cache"})
