"""``lineguard bench vision`` writes a complete, self-consistent report (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from lineguard.cli import main


def test_bench_vision_reports_both_backends(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "vision", "--bundle", str(bundle_dir), "--batch", "1", "2", "--rounds", "2",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["batch_size"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        ort, ref = run["onnxruntime"], run["pytorch_eager"]
        assert ort["backend"].startswith("onnxruntime") and ref["backend"] == "pytorch-eager"
        assert ort["frames_per_s"] > 0 and ref["frames_per_s"] > 0
        assert abs(run["speedup"] - ort["frames_per_s"] / ref["frames_per_s"]) < 1e-9
        assert run["inspection_speedup"] > 0
