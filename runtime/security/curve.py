"""CURVE keys for the line's ZeroMQ endpoints: key files, the config sections, and socket set-up.

Usage::

    from lineguard.runtime.security.curve import CurveClientConfig, create_key_pair

    public, secret = create_key_pair("keys", "cam0")     # keys/cam0.key (copy to the server's allow-list)
                                                        # keys/cam0.key_secret (stays on the camera, 0600)
    init_line_keys("/var/lib/lineguard/keys")           # install step: server + panel pairs, clients/, http.token
    curve = CurveClientConfig(client_secret_key_file="keys/cam0.key_secret",
                              server_public_key_file="keys/server.key")
    sock = zmq.Context.instance().socket(zmq.PUSH)
    curve.secure(sock)                                  # before connect()
    sock.connect("tcp://inspector:5555")

Key files are pyzmq's ``zmq.auth`` certificate format (the czmq/zcert text format: ``NAME.key`` holds the
public key, ``NAME.key_secret`` both keys), so keys made with other ZeroMQ tools work too. The server side
(``CurveServerConfig``, the ZAP allow-list and the count of refused peers) is in
:mod:`lineguard.runtime.security.curve_auth`.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal

import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict, Field
from zmq.utils import z85

from lineguard.runtime.security.key_files import new_key_paths

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class CurveError(ValueError):
    """A CURVE key file that cannot be used (missing, not a key file, no secret key where one is needed)."""


EndpointName = Literal["frames", "verdicts", "inspect", "explanations"]
ENDPOINT_NAMES: tuple[EndpointName, ...] = ("frames", "verdicts", "inspect", "explanations")
UNLISTED_ENDPOINTS: tuple[EndpointName, ...] = ("frames", "verdicts", "inspect")  # explanations: listed keys only
ANY_CAMERA = "*"


class ClientGrant(BaseModel):
    """What one client key (``NAME.key`` in the allow-list folder) may do on the line."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[EndpointName] = Field(default_factory=lambda: list(ENDPOINT_NAMES),
                                          description="endpoints this key may connect to; others refuse its handshake")
    cameras: list[str] = Field(default_factory=list, description="camera ids its frames (frames, inspect) may "
                               "claim; \"*\": any. Others are answered ERROR/CAMERA_NOT_ALLOWED")

    def may_claim(self, camera_id: str) -> bool:
        return ANY_CAMERA in self.cameras or camera_id in self.cameras


class CurveServerConfig(BaseModel):
    """``security.curve`` of a line config: every endpoint encrypted, only allow-listed clients served.

    ``clients`` grants each key (by its file name, ``cam0`` for ``cam0.key``) its endpoints and cameras. A key
    in the folder but not in ``clients`` may connect to frames, verdicts and inspect and speak only for the
    camera of its own name (``cam0.key``: frames claiming ``cam0``); the explanation port (the LLM) admits
    only keys whose grant lists it (the panel's).
    """

    model_config = ConfigDict(extra="forbid")

    server_secret_key_file: Path = Field(description="the server's NAME.key_secret (lineguard keys create)")
    allowed_clients_dir: Path = Field(description="folder of allowed clients' public NAME.key files; "
                                                  "re-read when it changes")
    clients: dict[str, ClientGrant] = Field(default_factory=dict, description="key name -> endpoints and "
                                            "cameras; unlisted keys: frames, verdicts and inspect, the camera "
                                            "of their own name")

    def grant_for(self, client: str) -> ClientGrant:
        """The grant of the key named ``client`` (the stem of its ``NAME.key`` file)."""
        grant = self.clients.get(client)
        return grant if grant is not None else ClientGrant(endpoints=list(UNLISTED_ENDPOINTS), cameras=[client])


class CurveClientConfig(BaseModel):
    """What a client (camera, watch, explain, a PLC gateway) needs to talk to a CURVE line."""

    model_config = ConfigDict(extra="forbid")

    client_secret_key_file: Path = Field(description="this client's NAME.key_secret")
    server_public_key_file: Path = Field(description="the server's public NAME.key")

    def secure(self, sock: zmq.Socket) -> zmq.Socket:
        """Make ``sock`` a CURVE client of the server; call before ``connect``."""
        public, secret = load_secret_key(self.client_secret_key_file)
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_serverkey = load_public_key(self.server_public_key_file)
        return sock


def client_config(client_secret_key_file: str | os.PathLike[str] | None,
                  server_public_key_file: str | os.PathLike[str] | None) -> CurveClientConfig | None:
    """The client config from two optional paths (CLI flags): both or neither."""
    if client_secret_key_file is None and server_public_key_file is None:
        return None
    if client_secret_key_file is None or server_public_key_file is None:
        raise CurveError("CURVE needs both the client's secret key file and the server's public key file")
    return CurveClientConfig(client_secret_key_file=Path(client_secret_key_file),
                             server_public_key_file=Path(server_public_key_file))


def require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE support")


def create_key_pair(out_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) into ``out_dir``.

    Refuses to overwrite an existing pair: replacing a key silently would lock its owner out.
    """
    require_curve()
    public, secret = new_key_paths(out_dir, name, (PUBLIC_SUFFIX, SECRET_SUFFIX), CurveError)
    out = public.parent
    # written in a private (0700) folder and moved into place, so the secret is never readable by others
    with tempfile.TemporaryDirectory(dir=out, prefix=".keys-") as private:
        public_file, secret_file = zmq.auth.create_certificates(private, name)
        os.chmod(secret_file, 0o600)
        os.chmod(public_file, 0o644)
        os.replace(secret_file, secret)
        os.replace(public_file, public)
    return public, secret


CLIENTS_DIR = "clients"  # the allow-list folder inside a line's key folder
HTTP_TOKEN_FILE = "http.token"
INSTALL_CLIENTS = ("panel",)  # key pairs the install step makes besides the server's


class LineKeys(BaseModel):
    """What ``lineguard keys init DIR`` leaves in DIR (the paths a secure line config names)."""

    server_secret_key_file: Path
    server_public_key_file: Path
    allowed_clients_dir: Path
    http_token_file: Path
    created: list[Path] = Field(default_factory=list, description="files made by this run (the rest existed)")


def init_line_keys(folder: str | os.PathLike[str], clients: tuple[str, ...] = INSTALL_CLIENTS) -> LineKeys:
    """The install step of a secure line: the server's key pair, the allow-list folder ``clients/``, one key
    pair per client in ``clients`` (its public key allowed) and an HTTP bearer token (0600). Idempotent:
    what exists is kept (a second run changes nothing), so it can run before every start."""
    import secrets

    root = Path(folder)
    allowed = root / CLIENTS_DIR
    for path in (root, allowed):
        if path.exists() and not path.is_dir():
            raise CurveError(f"{path} is a file: the line's keys need a folder there")
    allowed.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    for name in ("server", *clients):
        if not (root / f"{name}{SECRET_SUFFIX}").exists():
            created += create_key_pair(root, name)
        if name != "server" and not (allowed / f"{name}{PUBLIC_SUFFIX}").exists():
            allowed_key = allowed / f"{name}{PUBLIC_SUFFIX}"
            allowed_key.write_bytes((root / f"{name}{PUBLIC_SUFFIX}").read_bytes())
            created.append(allowed_key)
    token = root / HTTP_TOKEN_FILE
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        created.append(token)
    return LineKeys(server_secret_key_file=root / f"server{SECRET_SUFFIX}",
                    server_public_key_file=root / f"server{PUBLIC_SUFFIX}", allowed_clients_dir=allowed,
                    http_token_file=token, created=created)


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if path.is_dir():
        raise CurveError(f"CURVE key file {path} is a folder: name the key file in it (NAME.key_secret or NAME.key)")
    if not path.is_file():
        raise CurveError(f"CURVE key file {path} does not exist (lineguard keys create NAME --out DIR)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, IndexError) as exc:  # IndexError: a line without '='
        raise CurveError(f"{path} is not a ZeroMQ certificate file: {exc}") from None
    for key in (public, secret):
        if key is not None and not _is_z85_key(key):
            raise CurveError(f"{path} holds a malformed CURVE key (expected 40 Z85 characters)")
    return public, secret


def _is_z85_key(key: bytes) -> bool:
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError):
        return False


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a ``NAME.key`` (or ``NAME.key_secret``) file."""
    return _load(Path(path))[0]


def load_secret_key(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a ``NAME.key_secret`` file; warns when others may read it."""
    path = Path(path)
    public, secret = _load(path)
    if secret is None:
        raise CurveError(f"{path} holds no secret key (use the NAME{SECRET_SUFFIX} file, not NAME{PUBLIC_SUFFIX})")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret key file %s is readable by others (mode %o): chmod 600 it", path, mode & 0o777)
    return public, secret
