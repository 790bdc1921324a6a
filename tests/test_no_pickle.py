"""Nothing lineguard loads is unpickled: checked over the source tree (AST) and on a bundle with a pickle in it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.bundle import MANIFEST_NAME, Bundle, BundleIntegrityError, sha256_file

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "export", "lineguard")
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def sources() -> list[Path]:
    files = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    assert len(files) > 20, "the source tree was not found"
    return files


def dotted(node: ast.AST) -> str:
    """``np.load`` -> "np.load"; anything that is not a plain attribute chain -> ""."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return ""


def keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def violations(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {n}" for n in names if n.split(".")[0] in UNPICKLING_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name in ("np.load", "numpy.load") and not keyword_is(node, "allow_pickle", False):
            found.append(f"{where}: {name} without allow_pickle=False")
        if name in ("np.save", "numpy.save") and not keyword_is(node, "allow_pickle", False):
            found.append(f"{where}: {name} without allow_pickle=False")
        if name == "torch.load" and not keyword_is(node, "weights_only", True):
            found.append(f"{where}: torch.load without weights_only=True")
        if name == "yaml.load" or name == "yaml.unsafe_load":
            found.append(f"{where}: {name} (use yaml.safe_load)")
    return found


def test_no_source_file_unpickles() -> None:
    found = [v for path in sources() for v in violations(path)]
    assert found == [], "\n".join(found)


def test_the_checker_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text("import pickle\nimport numpy as np\nimport torch, yaml\n"
                   "np.load('a.npy')\nnp.load('b.npy', allow_pickle=True)\nnp.save('c.npy', x)\n"
                   "torch.load('d.pt')\nyaml.load(s)\nnp.load('ok.npy', allow_pickle=False)\n")
    found = violations(bad, tmp_path)
    assert len(found) == 6, found


def test_a_bundle_array_that_needs_unpickling_is_refused(bundle_copy: Path) -> None:
    """Even with a matching checksum (the manifest re-hashed), an object array is never unpickled."""
    prototypes = bundle_copy / "prototypes.npz"
    np.savez(prototypes, normal=np.array([{"payload": "x"}], dtype=object), abnormal=np.zeros((1, 4), np.float32))
    manifest = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    manifest["files"]["prototypes.npz"] = {"sha256": sha256_file(prototypes), "size": prototypes.stat().st_size}
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    bundle = Bundle.open(bundle_copy)
    with pytest.raises(BundleIntegrityError, match="without unpickling"):
        bundle.prototypes()
