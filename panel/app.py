"""The panel's web service (Starlette on uvicorn): the page, its live feed, the gallery and "Why?".

Usage::

    app = create_app(PanelSettings.for_runtime("127.0.0.1"))
    uvicorn.run(app, host="127.0.0.1", port=8080)        # what ``lineguard panel`` does

Routes:

* ``GET /``                     the page; ``/static/...`` its script, styles and icons (all local: no CDN)
* ``GET /api/events``           Server-Sent Events: ``state`` first, then ``verdict``, ``heartbeat``, ``alarm``
* ``GET /api/state``            the same state as JSON
* ``GET /api/gallery``          the newest NG frames (from the runtime's archive)
* ``GET /api/overlay.jpg?camera_id=&frame_id=``   the frame with its heatmap (rendered by the runtime); also
  as ``/api/frames/{camera}/{frame}/overlay.jpg`` for ids without "/"
* ``POST /api/explain``         ``{"frame_id", "question"}`` -> SSE stream of ``ExplainReply``; closing the
  stream cancels the answer on the runtime. Needs ``Authorization: Bearer TOKEN`` when a token is set;
  without one (a loopback panel) a browser POST from another origin is refused (403) and only the loopback
  host names are answered (:mod:`.request_guards`).
* ``GET /api/session``          whether "Why?" needs the token; ``GET /healthz`` the panel's own liveness
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import zmq.asyncio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from lineguard.panel.feed import FeedBridge
from lineguard.panel.request_guards import LoopbackHostOnly, cross_origin
from lineguard.panel.settings import PanelSettings
from lineguard.runtime.clients.explain import ExplainClient
from lineguard.runtime.contract import ExplainAsk
from lineguard.runtime.http.bearer import bearer_matches

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies and the browser from timing the stream out
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_ASK_BYTES = 16 * 1024  # an ExplainAsk (a 500-character question, a 256-character id) with room to spare


def sse(data: str, event: str | None = None) -> bytes:
    """One Server-Sent Event (``event:`` line only when named)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


class PanelService:
    """The panel's routes: viewing through the feed bridge and the runtime's HTTP port, asking through
    the explanation client (``lineguard.runtime.clients.explain``)."""

    def __init__(self, settings: PanelSettings) -> None:
        self.settings = settings
        self.feed = FeedBridge(settings.verdicts, curve=settings.curve)
        self.zmq = zmq.asyncio.Context()
        self.http: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.feed.start()
        token = self.settings.runtime_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else None
        self.http = httpx.AsyncClient(base_url=self.settings.runtime_http, timeout=10.0, headers=headers)
        try:
            yield
        finally:
            await self.http.aclose()
            self.feed.stop()
            self.zmq.destroy(linger=0)

    # -- viewing ------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: Request) -> Response:
        alive = self.feed.healthy
        return JSONResponse({"alive": alive, "feed_restarts": self.feed.failures}, 200 if alive else 503)

    async def session(self, request: Request) -> Response:
        return JSONResponse({"token_required": self.settings.token is not None})

    async def state(self, request: Request) -> Response:
        return Response(self.feed.snapshot().model_dump_json(), media_type="application/json")

    async def events(self, request: Request) -> Response:
        queue = self.feed.subscribe(asyncio.get_running_loop())

        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:  # noqa: UP041 (distinct from TimeoutError before 3.11)
                        yield b": keep-alive\n\n"
                        continue
                    yield sse(message.model_dump_json(), message.type)
            finally:
                self.feed.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def _runtime(self, path: str, **params: object) -> httpx.Response | Response:
        assert self.http is not None
        try:
            return await self.http.get(path, params=params)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"the runtime's HTTP port {self.settings.runtime_http} did not answer: "
                                 f"{exc.__class__.__name__}"}, 502)

    async def gallery(self, request: Request) -> Response:
        answer = await self._runtime("/api/frames", verdict="NG", limit=self.settings.gallery_size)
        if isinstance(answer, Response):
            return answer
        return Response(answer.content, answer.status_code, media_type="application/json")

    async def overlay(self, request: Request) -> Response:
        ids = request.path_params or request.query_params
        # relayed as query parameters: ids with "/" or ".." would not survive as path segments
        answer = await self._runtime("/api/overlay.jpg", camera_id=ids.get("camera_id", ""),
                                     frame_id=ids.get("frame_id", ""))
        if isinstance(answer, Response):
            return answer
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"),
                        headers={"Cache-Control": answer.headers.get("cache-control", "no-cache")})

    # -- asking -------------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        if self.settings.token is None:
            return True
        return bearer_matches(request.headers.get("authorization", ""), self.settings.token.get_secret_value())

    async def explain(self, request: Request) -> Response:
        # a tokenless panel: another site's page could post through the technician's browser (a token stops that:
        # a browser never adds it by itself, so a panel with one may sit behind a proxy that rewrites Host)
        if self.settings.token is None and cross_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, 403)
        if not self._authorised(request):
            return JSONResponse({"error": "operator token required"}, 401,
                                headers={"WWW-Authenticate": 'Bearer realm="lineguard panel"'})
        body = bytearray()
        async for chunk in request.stream():  # bounded: a question is a few hundred bytes
            body += chunk
            if len(body) > MAX_ASK_BYTES:
                return JSONResponse({"error": f"request body over {MAX_ASK_BYTES} bytes"}, 413)
        try:
            ask = ExplainAsk.model_validate_json(bytes(body))
        except ValidationError as exc:
            return JSONResponse({"error": f"bad request: {exc.errors()[0]['msg']}"}, 400)
        return StreamingResponse(self._relay(ask), media_type="text/event-stream", headers=SSE_HEADERS)

    async def _relay(self, ask: ExplainAsk) -> AsyncIterator[bytes]:
        """Relay one explanation; if the page goes away (or cancels) first, the runtime is told to stop."""
        question = ExplainClient(self.settings.explanations, ask.frame_id, ask.question, follow_up=ask.follow_up,
                                 idle_timeout_s=self.settings.explain_idle_timeout_s, curve=self.settings.curve,
                                 context=self.zmq)
        try:
            with question:  # closing an unfinished question cancels its answer on the runtime
                async for reply in question:
                    yield sse(reply.model_dump_json())
        finally:
            if question.cancelled:  # cancelled by the page or its connection dropped
                log.info("explanation of %s cancelled by the page", ask.frame_id)


def create_app(settings: PanelSettings) -> ASGIApp:
    """The panel's app for ``settings``: Starlette (its ``PanelService`` as ``app.state.panel``), behind
    :class:`LoopbackHostOnly` where it runs without an operator token."""
    service = PanelService(settings)
    app = Starlette(
        routes=[
            Route("/", service.index),
            Route("/healthz", service.healthz),
            Route("/api/session", service.session),
            Route("/api/state", service.state),
            Route("/api/events", service.events),
            Route("/api/gallery", service.gallery),
            Route("/api/overlay.jpg", service.overlay),
            Route("/api/frames/{camera_id}/{frame_id}/overlay.jpg", service.overlay),
            Route("/api/explain", service.explain, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=service.lifespan,
    )
    app.state.panel = service
    # a tokenless panel (loopback only) answers only its own host names: no DNS rebinding into it
    return LoopbackHostOnly(app) if settings.token is None else app
