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
        spread = run["speedup_spread"]  # per-round ratios: the median and its min-max
        assert spread["rounds"] == 2 and spread["low"] <= run["speedup"] == spread["median"] <= spread["high"]
        assert run["inspection_speedup"] == run["inspection_speedup_spread"]["median"] > 0
        assert set(run["stages_ms"]) == {"preprocess", "encoder", "decoder", "scoring"}
        assert ort["ms_per_frame_spread"]["low"] <= ort["ms_per_frame"] <= ort["ms_per_frame_spread"]["high"]
        # the INT8 encoder beside FP32, in the same rounds, its verdicts compared with FP32's
        assert run["inspection_onnxruntime_int8"]["frames_per_s"] > 0 and "int8" in run["onnxruntime_int8"]["backend"]
        assert 0 <= run["int8_verdicts_equal"] <= 1 and run["int8_inspection_speedup"]["rounds"] == 2
    assert [p["max_abs_diff"] for p in report["preprocess"]] == [0.0, 0.0]  # the fused path gives the same numbers


def test_bench_vision_measures_a_tiled_product(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    """`bench vision --tiles 2`: both chains run the bench product's frames as 2x2 tiles (what a frame of a
    product of large photos costs); the report says so."""
    out = tmp_path / "bench.json"
    assert main(["bench", "vision", "--bundle", str(bundle_dir), "--batch", "1", "--rounds", "1", "--tiles", "2",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tiles"] == 2 and "as 2x2 tiles" in capsys.readouterr().out
    run = report["runs"][0]
    assert run["speedup"] > 0 and run["inspection_onnxruntime"]["frames_per_s"] > 0
    # the same frames inspected whole, in the same rounds: the tiles' cost as one ratio
    assert run["inspection_onnxruntime_whole"]["frames_per_s"] > 0 and run["tiled_cost"]["rounds"] == 1
    assert run["tiled_cost"]["median"] > 0
    assert main(["bench", "vision", "--bundle", str(bundle_dir), "--tiles", "auto", "--json", str(out)]) == 2


def test_bench_line_compares_zeromq_with_direct_calls(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "line.json"
    assert main(["bench", "line", "--bundle", str(bundle_dir), "--frames", "12", "--batch", "1", "4",
                 "--burst", "4", "--overload", "--rounds", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    modes = {(r["mode"], r["max_batch"]) for r in report["runs"]}
    assert modes == {("direct", 1), ("zeromq", 1), ("direct", 4), ("zeromq", 4)}
    assert all(r["frames"] == 12 and r["latency_p99_ms"] >= r["latency_p50_ms"] > 0 for r in report["runs"])
    assert set(report["zeromq_vs_direct"]) == {"1", "4"} and report["microbatch_gain"] > 0
    assert report["rounds"] == 2  # interleaved rounds: each ratio is the median of its spread
    for b, ratio in report["zeromq_vs_direct"].items():
        spread = report["zeromq_vs_direct_spread"][b]
        assert spread["rounds"] == 2 and spread["low"] <= ratio == spread["median"] <= spread["high"]
    assert report["microbatch_gain"] == report["microbatch_gain_spread"]["median"]
    assert report["frame_shape"] == [224, 224, 3]
    assert [(r["scenario"], r["deadline_aware"]) for r in report["overload"]] == [("burst", True), ("burst", False)]
    assert all(r["exactly_one_verdict"] and r["frames"] == 4 and r["ideal_judged"] > 0 for r in report["overload"])
