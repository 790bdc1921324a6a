"""The real ``tritonserver`` for the tests (lineguard.bench.triton_local), or a skip where it is not unpacked
(a failure on CI, where ``make test`` always unpacks it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lineguard.bench.triton_local import find_tritonserver, python_path, triton_server

__all__ = ["python_path", "triton_root", "triton_server"]


def triton_root() -> Path:
    root = find_tritonserver()
    if root is None:
        message = "no tritonserver unpacked (make triton, then LINEGUARD_TRITONSERVER=.venv/triton)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root
