"""The architecture rules, checked on the source tree (README "Where things live", DESIGN.md §1).

- The edge side (runtime/ and the panel) never imports torch, the export side, the CLI or the tooling
  (bench, evaluation, soak).
- Inside runtime/, subpackages depend downward only: each may import the packages listed for it in
  ``ALLOWED`` and nothing else of the runtime.
- No module grows past ``MAX_LINES``: a module that long does more than one job.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime"
EDGE = [RUNTIME, ROOT / "panel"]
TOOLING = ("lineguard.export", "lineguard.cli", "lineguard.bench", "lineguard.evaluation", "lineguard.soak",
           "lineguard.child_process", "lineguard.demo")
MAX_LINES = 420

# runtime subpackage (or top-level module) -> the runtime packages it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "contract": set(),
    "image_io": set(),
    "security": {"contract"},
    "bundle": {"contract", "security"},
    "inference": {"contract", "bundle"},
    "scoring": {"contract", "bundle", "inference", "image_io"},
    "llm": {"contract", "bundle"},
    "line": {"contract", "bundle", "security", "inference", "scoring", "llm"},
    "http": {"contract", "bundle", "scoring", "line"},
    "clients": {"contract", "security", "image_io"},
    "__init__": {"scoring"},
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _layer(path: Path) -> str:
    rel = path.relative_to(RUNTIME)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_runtime_module_belongs_to_a_known_layer() -> None:
    unknown = sorted({_layer(p) for p in RUNTIME.rglob("*.py")} - set(ALLOWED))
    assert unknown == [], f"add {unknown} to ALLOWED (and to the README's tree) or move them into a layer"


def test_every_runtime_package_says_what_it_owns() -> None:
    missing = [str(p.relative_to(ROOT)) for p in RUNTIME.glob("*/__init__.py") if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


def test_edge_never_imports_torch_export_cli_or_tooling() -> None:
    offenders = []
    for path in (p for folder in EDGE for p in folder.rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] == "torch" or name.startswith(TOOLING):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_runtime_layers_depend_downward_only() -> None:
    offenders = []
    for path in RUNTIME.rglob("*.py"):
        layer = _layer(path)
        for name in _imports(path):
            if not name.startswith("lineguard.runtime."):
                continue
            target = name.split(".")[2]
            if target != layer and target not in ALLOWED[layer]:
                offenders.append(f"{path.relative_to(ROOT)} ({layer}) imports {name}")
    assert offenders == []


@pytest.mark.parametrize("folder", ["runtime", "export", "lineguard", "panel"])
def test_no_module_over_the_size_limit(folder: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by job: {long}"


def test_importing_the_runtime_loads_no_torch() -> None:
    code = (
        "import sys, lineguard.runtime, lineguard.runtime.scoring.enroll, lineguard.runtime.line.server,"
        " lineguard.runtime.http.service, lineguard.runtime.clients.camera, lineguard.panel.app;"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('lineguard.export', 'lineguard.bench',"
        " 'lineguard.evaluation', 'lineguard.cli'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
