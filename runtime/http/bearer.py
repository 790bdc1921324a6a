"""The one reading of an ``Authorization: Bearer TOKEN`` header, shared by the runtime's HTTP port and the panel.

    bearer_matches(request.headers.get("authorization", ""), token)   # True or False

The scheme in any case and spaces around the token are taken, as RFC 6750 clients send them; the token is
compared in constant time.
"""

from __future__ import annotations

import secrets


def bearer_matches(authorization: str, token: str) -> bool:
    """The header carries ``token`` as a bearer credential."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())
