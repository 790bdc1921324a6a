"""``python -m lineguard.bench.against_commit``: an older commit's own code and this checkout's, timed in
interleaved rounds in separate processes (plumbing only: no timing assertions)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lineguard.bench.against_commit import REPO, _package_dirs, against_commit, markdown

OLD_PYPROJECT = """
[tool.setuptools.package-dir]
"lineguard" = "lineguard"
"lineguard.runtime" = "runtime"
"lineguard.export" = "export"

[tool.pytest.ini_options]
testpaths = ["tests"]
"""


def test_package_dirs_of_a_pyproject() -> None:
    assert _package_dirs(OLD_PYPROJECT) == {"lineguard": "lineguard", "lineguard.runtime": "runtime",
                                            "lineguard.export": "export"}
    assert _package_dirs((REPO / "pyproject.toml").read_text())["lineguard.runtime"] == "runtime"


def test_a_commit_against_this_checkout(bundle_dir: Path, tmp_path: Path) -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    # HEAD's committed code as the "old" side, on the session's bundle (an export would take minutes)
    report = against_commit("HEAD", tmp_path, rounds=2, calls=1, threads=1, bundle=bundle_dir,
                            baseline_bundle=bundle_dir)
    # the commit's own tree is imported, cached by commit (a moved branch or HEAD gets a fresh tree)
    assert (tmp_path / head.stdout.strip()[:12] / "py" / "lineguard" / "runtime").is_symlink()
    assert [c.name for c in report.candidates] == ["HEAD fp32", "checkout fp32", "checkout int8 encoder"]
    assert [run.frame for run in report.runs] == ["bench", "camera"]
    for run in report.runs:
        assert len(run.ms_per_frame) == 3 and all(s.rounds == 2 and s.median > 0 for s in run.ms_per_frame.values())
        assert len(run.speedup) == 2  # every candidate but the baseline, as ratios per round
    assert 0.0 <= report.int8_verdicts_equal <= 1.0
    text = markdown(report)
    assert "baseline" in text and "int8" in text
