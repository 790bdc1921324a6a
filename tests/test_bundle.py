"""Bundle round trip, integrity checks and the export's parity report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.bundle import (
    Bundle,
    BundleIncompatibleError,
    BundleIntegrityError,
    BundleNotFoundError,
)
from lineguard.runtime.inference.chain import VisionChain


def test_manifest_describes_the_bundle(bundle_dir: Path) -> None:
    bundle = Bundle.open(bundle_dir)
    m = bundle.manifest
    assert m.schema_version == 1
    assert [s.name for s in m.encoder.stages] == ["s1", "s2", "s3", "s4"]
    assert [s.stride for s in m.encoder.stages] == [4, 8, 16, 32]
    assert m.preprocessing.input_size == (224, 224)
    assert m.scoring.memory_stages == ["s2", "s3"] and m.scoring.statistics_stages == ["s3"]  # README: Statistics stages
    assert set(m.files) >= {"encoder.onnx", "decoder.onnx", "prototypes.npz", "parity.json"}
    normal, abnormal = bundle.prototypes()
    assert normal.shape == abnormal.shape == (384,)
    assert abs(float(normal @ abnormal)) < 0.999  # two different prototypes
    parity = json.loads((bundle_dir / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"]["encoder"] <= parity["tolerance"]


def test_onnx_chain_matches_pytorch(bundle_dir: Path, weave_parts: list[np.ndarray]) -> None:
    from lineguard.export.reference_chain import TorchVisionChain
    from lineguard.export.vision import PARITY_TOLERANCE

    bundle = Bundle.open(bundle_dir)
    ort_chain, torch_chain = VisionChain(bundle), TorchVisionChain(bundle)
    batch = ort_chain.preprocessor(weave_parts[:3])
    a, b = ort_chain.run(batch), torch_chain.run(batch)
    for name in a.features:
        assert a.features[name].shape == b.features[name].shape
        assert np.abs(a.features[name] - b.features[name]).max() < PARITY_TOLERANCE
    assert a.decoder_map.shape == (3, 224, 224)
    assert np.abs(a.decoder_map - b.decoder_map).max() < PARITY_TOLERANCE


def test_dynamic_batch(bundle_dir: Path, weave_parts: list[np.ndarray]) -> None:
    chain = VisionChain(Bundle.open(bundle_dir))
    one = chain.run(chain.preprocessor(weave_parts[:1]))
    five = chain.run(chain.preprocessor(weave_parts[:5]))
    assert np.allclose(one.decoder_map[0], five.decoder_map[0], atol=1e-4)


def test_tampered_file_is_refused(bundle_copy: Path) -> None:
    data = bytearray((bundle_copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="decoder.onnx.*sha256"):
        Bundle.open(bundle_copy)


def test_truncated_file_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / "encoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleIntegrityError, match="encoder.onnx.*truncated"):
        Bundle.open(bundle_copy)


def test_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "prototypes.npz").unlink()
    with pytest.raises(BundleIntegrityError, match="prototypes.npz.*missing"):
        Bundle.open(bundle_copy)


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError, match="does not exist"):
        Bundle.open(tmp_path / "nope")
    with pytest.raises(BundleNotFoundError, match="manifest.json is missing"):
        Bundle.open(tmp_path)


def test_other_schema_version_is_incompatible(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIncompatibleError, match="schema_version 99"):
        Bundle.open(bundle_copy)


PRODUCT = {"name": "tile", "shots": 4, "views": 8, "memory_file": "products/tile/memory.npz",
           "calibration_file": "products/tile/calibration.json", "enrolled_at": "2026-12-03T00:00:00+00:00"}


@pytest.mark.parametrize(("edit", "says"), [
    ({"preprocessing.std": [0, 0, 0]}, "preprocessing.std.0: Input should be greater than 0 (got 0)"),
    ({"preprocessing.mean": [float("nan"), 0, 0]}, "preprocessing.mean.0: Input should be a finite number"),
    ({"preprocessing.input_size": [0, 0]}, "preprocessing.input_size.0: Input should be greater than or equal to 32"),
    ({"preprocessing.input_size": [-5, 224]}, "preprocessing.input_size.0: Input should be greater than or equal to 32"),
    ({"preprocessing.input_size": [300, 300]}, "preprocessing.input_size 300x300 does not give encoder stage"),
    ({"products": {"tile": {**PRODUCT, "shots": -2}}}, "products.tile.shots: Input should be greater than or equal to 1"),
    ({"products": {"tile": {**PRODUCT, "views": 0}}}, "products.tile.views: Input should be greater than or equal to 1"),
    ({"products": {"tile": {**PRODUCT, "name": "brick"}}}, "products.tile is named 'brick': an entry's name is its key"),
], ids=["zero-std", "nan-mean", "zero-size", "negative-size", "other-size", "shots", "views", "name"])
def test_a_manifest_that_cannot_be_run_is_refused_in_one_line(bundle_copy: Path, edit: dict[str, object],
                                                              says: str) -> None:
    """Values that used to validate and then crash the chain (or pass NaN scores as OK) are refused at open."""
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    for dotted, value in edit.items():
        *parents, name = dotted.split(".")
        node = manifest
        for part in parents:
            node = node[part]
        node[name] = value
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIncompatibleError) as refused:
        Bundle.open(bundle_copy)
    assert says in str(refused.value) and "\n" not in str(refused.value), str(refused.value)


def test_manifest_paths_cannot_escape_the_bundle(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["../outside.bin"] = {"sha256": "0" * 64, "size": 1}
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        Bundle.open(bundle_copy)


def test_provider_order_prefers_tensorrt_then_cuda_then_cpu() -> None:
    from lineguard.runtime.inference.ort_backend import select_providers

    assert select_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers(["CPUExecutionProvider", "OpenVINOExecutionProvider"]) == ["CPUExecutionProvider"]


def test_a_bundle_that_failed_parity_is_refused(bundle_copy: Path) -> None:
    """A manifest recording a failed parity check (older exports wrote one) never loads."""
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["parity"]["passed"] = False
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIncompatibleError, match="failed its parity check"):
        Bundle.open(bundle_copy)


def test_an_export_failing_parity_leaves_no_loadable_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real export, with a tolerance nothing can meet: ParityError, no manifest, and Bundle.open says why."""
    from lineguard.export import vision

    monkeypatch.setattr(vision, "PARITY_TOLERANCE", -1.0)
    out = tmp_path / "failed"
    with pytest.raises(vision.ParityError, match="not a loadable bundle"):
        vision.export_vision(out, steps=1, samples=4, seed=0)
    assert not (out / "manifest.json").exists() and (out / "parity.json").is_file()
    with pytest.raises(BundleIncompatibleError, match="failed its parity check"):
        Bundle.open(out)
