"""What a request must look like before the panel's routes see it: the browser-side attacks a panel on a
technician's box is open to, refused at the door.

Usage::

    app = LoopbackHostOnly(app)            # a tokenless panel answers only Host: localhost/127.0.0.1/[::1]
    if cross_origin(request): ...          # a POST another site's page made the browser send

Both guard a panel without an operator token (which may only bind loopback). A panel with a token needs
neither: a browser never adds the token by itself, and such a panel may sit behind a proxy that rewrites Host.

A panel bound to 127.0.0.1 without an operator token runs the LLM for anyone who can reach it, and the
browser on that box can be made to reach it: a page of another site whose name resolves to 127.0.0.1 (DNS
rebinding) arrives with that site's Host header, and a cross-site form or fetch POST arrives with that
site's Origin. Neither is ever what the panel's own page sends.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lineguard.runtime.line.config import is_loopback_host


def host_name(authority: str) -> str:
    """The host of a Host header or an origin's authority (port and IPv6 brackets dropped)."""
    try:
        return urlsplit(f"//{authority}").hostname or ""
    except ValueError:  # an unclosed "[" and the like
        return ""


class LoopbackHostOnly:
    """ASGI middleware: 421 for a request whose Host is not a loopback name (DNS rebinding). Pure ASGI, not
    BaseHTTPMiddleware, so the SSE streams keep seeing their client's disconnects."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not is_loopback_host(host_name(Headers(scope=scope).get("host", ""))):
            refusal = PlainTextResponse("this panel is bound to loopback: open it as http://localhost:PORT", 421)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def cross_origin(request: Request) -> bool:
    """The request names an Origin other than the panel itself (browsers send Origin with every POST)."""
    origin = request.headers.get("origin")
    if origin is None:  # not from a browser page (curl, the tests' clients): the token rules still apply
        return False
    parts = urlsplit(origin)
    return parts.netloc.lower() != request.headers.get("host", "").lower() or parts.scheme not in ("http", "https")
