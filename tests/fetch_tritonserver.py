"""Unpack a real ``tritonserver`` (with its Python backend) from the ``nvidia-pytriton`` wheel, for the
tests that serve a lineguard repository through it (``make triton``; ``make test`` runs it first).

Usage::

    python tests/fetch_tritonserver.py .venv/triton        # then LINEGUARD_TRITONSERVER=.venv/triton

The wheel is downloaded, not installed: it pins numpy<2, which this environment does not use. What
the server needs is unpacked (``pytriton/tritonserver`` and the bundled libraries, keeping their
relative layout), the Python-backend stub for this Python is put where the backend looks for it, and
numpy<2 goes into ``DEST/python`` for the stub (its C extension is built against numpy 1).
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "nvidia-pytriton==0.7.0"
STUB_NUMPY = "numpy==1.26.4"


def fetch(dest: Path) -> Path:
    server = dest / "pytriton" / "tritonserver"
    if (server / "bin" / "tritonserver").is_file() and (dest / "python" / "numpy").is_dir():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lineguard-pytriton-") as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", scratch, WHEEL],
                       check=True)
        (wheel,) = Path(scratch).glob("nvidia_pytriton-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
                    archive.extract(member, dest)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise SystemExit(f"nvidia-pytriton ships no Python-backend stub for Python {version}")
    shutil.copy(stub, server / "backends" / "python" / stub.name)
    for binary in [server / "bin" / "tritonserver", server / "backends" / "python" / stub.name]:
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(dest / "python"),
                    STUB_NUMPY], check=True)
    return dest


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv/triton")))
