"""Reduced-precision CPU inference has to earn its place: an INT8 encoder (ONNX Runtime static
quantisation, calibrated on normals) is checked per product against FP32 and used by a line only
while every product it serves passed with its current memory; otherwise FP32, and the chain says why."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.runtime.bundle import Bundle, CpuModelRecord, PrecisionCheck
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.cpu_precision import choose_cpu_models


def with_int8_record(root: Path, passed: bool = True, memory_sha: str | None = None,
                     onnx_sha: str | None = None) -> Bundle:
    """A stand-in INT8 encoder (a copy of the FP32 graph: only the selection is under test) and its record."""
    from lineguard.export.cpu_int8 import record_cpu_model

    bundle = Bundle.open(root)
    m = bundle.manifest
    shutil.copy(bundle.path(m.encoder.file), bundle.path("encoder.int8.onnx"))
    memory = m.files[m.products["weave"].memory_file].sha256
    check = PrecisionCheck(product="weave", memory_sha256=memory_sha or memory, n_images=8, verdict_agreement=1.0,
                           image_auroc_fp32=0.9, image_auroc=0.9, accuracy_fp32=0.8, accuracy=0.8, passed=passed,
                           checked_at="2026-12-01T00:00:00+00:00")
    record_cpu_model(bundle, CpuModelRecord(model="encoder", precision="int8", file="encoder.int8.onnx",
                                            onnx_sha256=onnx_sha or m.files[m.encoder.file].sha256,
                                            calibration_images=7, feature_relative_diff=0.1, checks={"weave": check}))
    return Bundle.open(root)


@pytest.fixture
def enrolled_copy(enrolled_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(enrolled_dir, copy)
    return copy


def test_int8_runs_only_where_it_passed(enrolled_copy: Path) -> None:
    bundle = with_int8_record(enrolled_copy)
    files, reasons = choose_cpu_models(bundle, "int8", ["weave"])
    assert files["encoder"] == "encoder.int8.onnx" and files["decoder"] == bundle.manifest.decoder.file
    chain = VisionChain(bundle, providers=["CPUExecutionProvider"], cpu_precision="int8", products=["weave"])
    assert chain.encoder.path.name == "encoder.int8.onnx"
    assert any("encoder int8: checked on weave" in r for r in chain.backend.reasons)
    assert VisionChain(bundle, providers=["CPUExecutionProvider"]).encoder.path.name == "encoder.onnx"  # fp32 default
    # a product the check never saw, or none enrolled to check on
    assert choose_cpu_models(bundle, "int8", ["tile"])[0]["encoder"] == "encoder.onnx"


@pytest.mark.parametrize("change, reason", [
    ({"passed": False}, "failed its check on weave"),
    ({"memory_sha": "0" * 64}, "re-enrolled since its check"),
    ({"onnx_sha": "0" * 64}, "quantised from another encoder graph"),
])
def test_int8_falls_back_to_fp32_and_says_why(enrolled_copy: Path, change: dict, reason: str) -> None:
    bundle = with_int8_record(enrolled_copy, **change)
    files, reasons = choose_cpu_models(bundle, "int8", ["weave"])
    assert files["encoder"] == bundle.manifest.encoder.file
    assert any(reason in r for r in reasons), reasons


def write_category(root: Path, normals: list[np.ndarray], good: list[np.ndarray], defects: list[np.ndarray]) -> None:
    for folder, images in (("train/good", normals), ("test/good", good), ("test/defect", defects)):
        (root / "weave" / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(root / "weave" / folder / f"{i:03d}.png"), image)


@pytest.mark.slow
def test_export_int8_quantises_checks_and_records(enrolled_copy: Path, tmp_path: Path, weave_parts: list[np.ndarray],
                                                  ng_weave: np.ndarray) -> None:
    from lineguard.cli import main

    defects = [ng_weave]
    for i in range(3):
        part = weave_parts[12 + i].copy()
        cv2.circle(part, (60 + 40 * i, 90), 14, (20, 20, 20), -1)
        defects.append(part)
    write_category(tmp_path / "data", weave_parts[:8], weave_parts[8:12], defects)
    assert main(["export", "int8", str(enrolled_copy), "--product", "weave", "--data", str(tmp_path / "data")]) == 0
    bundle = Bundle.open(enrolled_copy)  # the INT8 graph is checksummed like every other file
    (record,) = bundle.manifest.cpu_models
    assert record.file in bundle.manifest.files and record.calibration_images == 7
    assert 0 < record.feature_relative_diff < 1
    check = record.checks["weave"]
    assert check.n_images == 8 and 0 <= check.verdict_agreement <= 1
    auroc_holds = check.image_auroc >= check.image_auroc_fp32 - 0.005
    assert check.passed == (check.verdict_agreement == 1.0 and auroc_holds)
    files, _ = choose_cpu_models(bundle, "int8", ["weave"])
    assert (files["encoder"] == "encoder.int8.onnx") == check.passed


@pytest.mark.slow
def test_int8_table_enrols_checks_and_renders_a_category(bundle_dir: Path, tmp_path: Path,
                                                         weave_parts: list[np.ndarray], ng_weave: np.ndarray) -> None:
    """`make int8-checks`: enrol as `lineguard enroll` would in a scratch copy, quantise, check, one table row."""
    from lineguard.evaluation.int8_checks import check_category, render

    write_category(tmp_path / "data", weave_parts[:8], weave_parts[8:12], [ng_weave])
    before = sorted(p.name for p in bundle_dir.iterdir()), (bundle_dir / "manifest.json").read_bytes()
    row = check_category(bundle_dir, tmp_path / "data", "weave", "texture")
    after = sorted(p.name for p in bundle_dir.iterdir()), (bundle_dir / "manifest.json").read_bytes()
    assert after == before  # the bundle itself is untouched: the same files, the same manifest
    assert row.check.n_images == 5 and row.calibration_images == 7 and row.check.product == "weave"
    table = render([row], ["a note"])
    assert f"| weave | texture | 5 | {row.check.verdict_agreement:.0%} |" in table
    assert table.rstrip().endswith("- a note") and ("| yes |" in table) == row.check.passed
