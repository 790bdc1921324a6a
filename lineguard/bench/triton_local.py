"""A real ``tritonserver`` process on loopback ports, from the nvidia-pytriton wheel that ``make triton``
unpacks (tests/fetch_tritonserver.py): what the Triton tests and ``bench all``'s Triton row serve through.

Usage::

    from lineguard.bench.triton_local import find_tritonserver, python_path, triton_server
    root = find_tritonserver()          # LINEGUARD_TRITONSERVER, else .venv/triton; None where absent
    with triton_server(root, Path("repo"), Path("triton.log")) as url:     # "127.0.0.1:PORT" (gRPC)
        VisionChain(bundle, backend="triton", triton_url=url)
"""

from __future__ import annotations

import contextlib
import os
import site
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from lineguard.child_process import stop_process


def find_tritonserver(default: Path = Path(".venv/triton")) -> Path | None:
    """The unpacked server's folder (``LINEGUARD_TRITONSERVER``, else ``default``), or None."""
    folder = os.environ.get("LINEGUARD_TRITONSERVER")
    root = Path(folder) if folder else default
    return root if (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file() else None


def python_path(root: Path) -> list[str]:
    """What the Python-backend models import from: numpy 1 for the stub, then this environment."""
    return [str(root / "python"), *site.getsitepackages()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def triton_server(root: Path, repository: Path, log: Path, exit_on_error: bool = True,
                  timeout_s: float = 180.0) -> Iterator[str]:
    """Serve ``repository``; yields the gRPC ``host:port`` once the server is ready (or, with
    ``exit_on_error=False``, once it is live: failing models stay listed with their reason)."""
    import tritonclient.grpc as grpcclient

    server = root / "pytriton" / "tritonserver"
    grpc_port = _free_port()
    command = [str(server / "bin" / "tritonserver"), f"--model-repository={repository}",
               f"--backend-directory={server / 'backends'}", "--http-port", str(_free_port()),
               "--grpc-port", str(grpc_port), "--metrics-port", str(_free_port()), "--allow-metrics=false",
               f"--exit-on-error={'true' if exit_on_error else 'false'}",
               f"--strict-readiness={'true' if exit_on_error else 'false'}"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{grpc_port}"
    try:
        client = grpcclient.InferenceServerClient(url)
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            with contextlib.suppress(Exception):
                if client.is_server_ready() if exit_on_error else client.is_server_live():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver not ready in {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)
