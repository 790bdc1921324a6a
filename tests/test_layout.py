"""The architecture rule: the edge side (runtime/ and the panel) never imports torch or the export side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGE = [ROOT / "runtime", ROOT / "panel"]


def test_runtime_sources_do_not_import_torch_or_export() -> None:
    offenders = []
    for path in (p for folder in EDGE for p in folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "torch" or n.startswith("lineguard.export")]
    assert offenders == []


def test_importing_the_runtime_loads_no_torch() -> None:
    code = (
        "import sys, lineguard.runtime, lineguard.runtime.enroll, lineguard.runtime.evaluation,"
        " lineguard.runtime.server, lineguard.runtime.http_service, lineguard.panel.app;"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('lineguard.export')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
