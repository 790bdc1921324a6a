"""Where the panel listens, which runtime it shows, and who may ask the LLM.

Usage::

    settings = PanelSettings.for_runtime("10.0.0.5")          # the runtime's default ports
    settings.verdicts, settings.explanations, settings.runtime_http
    PanelSettings.for_runtime("10.0.0.5", host="0.0.0.0")     # PanelSettingsError: needs an operator token

Viewing (live feed, gallery, overlays) needs nothing. Asking "Why?" runs the line's LLM: with an operator
token configured the page must present it (``Authorization: Bearer ...``), and binding anywhere but
loopback without a token is refused, so a panel reachable from the plant network never runs open.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from lineguard.runtime.line.config import is_loopback_host
from lineguard.runtime.security.curve import CurveClientConfig, client_config

TOKEN_ENV = "LINEGUARD_PANEL_TOKEN"
# RFC 1123 labels, plus "_" (Docker Compose's container names; resolvers and ZeroMQ take it)
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def is_host(text: str) -> bool:
    """An IP address or a DNS host name: what the runtime's endpoints can be reached at."""
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return len(text) <= 253 and _HOST_NAME.fullmatch(text) is not None


class PanelSettingsError(ValueError):
    """Settings the panel cannot run with; the message says what to change."""


class PanelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: str = Field(description="the runtime's verdicts PUB endpoint (tcp://HOST:5556)")
    explanations: str = Field(description="the runtime's explanations ROUTER endpoint (tcp://HOST:5557)")
    runtime_http: str = Field(description="the runtime's HTTP port, for the NG archive (http://HOST:8081)")
    host: str = Field("127.0.0.1", description="interface the panel binds")
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="operator token for explanations")
    explain_idle_timeout_s: float = Field(120.0, gt=0, description="give up when the LLM says nothing this long")
    gallery_size: int = Field(24, ge=1, le=200)
    curve: CurveClientConfig | None = Field(None, description="the panel's key pair and the runtime's public key, "
                                            "for a line with CURVE on (security.curve)")
    runtime_token: SecretStr | None = Field(None, description="the runtime's HTTP token (http.token_file), sent "
                                            "with every archive request when the runtime's port is beyond loopback")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> PanelSettings:
        if not is_loopback_host(self.host) and self.token is None:
            raise ValueError(f"the panel binds {self.host}, beyond this machine: set an operator token "
                             f"(--token-file FILE or ${TOKEN_ENV}) or bind 127.0.0.1")
        return self

    @classmethod
    def for_runtime(cls, runtime: str, verdicts_port: int = 5556, explanations_port: int = 5557,
                    http_port: int = 8081, token_file: str | os.PathLike[str] | None = None,
                    curve_client_key: str | os.PathLike[str] | None = None,
                    curve_server_key: str | os.PathLike[str] | None = None,
                    runtime_token_file: str | os.PathLike[str] | None = None, **options: object) -> PanelSettings:
        """Settings for a runtime on ``runtime`` (host name or address) at its default ports."""
        if not is_host(runtime):  # else the feed's thread dies on its first connect, behind a page that loads
            raise PanelSettingsError(f"{runtime!r} is not a host name or IP address (the runtime's --runtime)")
        runtime_token = None
        if runtime_token_file is not None:
            try:
                runtime_token = Path(runtime_token_file).read_text().strip()
            except OSError as exc:
                raise PanelSettingsError(f"cannot read the runtime token file {runtime_token_file}: "
                                         f"{exc.strerror or exc}") from None
        token = os.environ.get(TOKEN_ENV)
        if token_file is not None:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise PanelSettingsError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
        if token is not None and len(token) < 12:
            raise PanelSettingsError("the operator token must be at least 12 characters")
        bare = runtime.strip("[]")  # an IPv6 address, bracketed or not
        host = f"[{bare}]" if ":" in bare else bare
        try:
            return cls(verdicts=f"tcp://{host}:{verdicts_port}", explanations=f"tcp://{host}:{explanations_port}",
                       runtime_http=f"http://{host}:{http_port}", token=token,
                       curve=client_config(curve_client_key, curve_server_key), runtime_token=runtime_token,
                       **options)
        except ValidationError as exc:
            raise PanelSettingsError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
