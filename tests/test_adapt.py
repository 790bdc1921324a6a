"""``lineguard adapt``: a product's own decoder, fine-tuned on its shots, exported with parity, recorded in
the manifest, and the one its frames run on from then on (enrolment, calibration, inspection)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from image_folders import write_normals

from lineguard.runtime.bundle import Bundle
from lineguard.runtime.scoring.enroll import calibrate_product, enroll_product, pixel_digest
from lineguard.runtime.scoring.inspector import Inspector

STEPS, SAMPLES = 6, 16  # the plumbing, not the quality: `make eval-adapt` measures that on real photos


@pytest.fixture(scope="module")
def adapted(bundle_dir: Path, weave_parts: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    import shutil

    from lineguard.export.adapt import adapt_product

    root = tmp_path_factory.mktemp("adapt")
    shutil.copytree(bundle_dir, root / "bundle")
    normals = write_normals(root / "normals", weave_parts[:4] + weave_parts[16:28])
    result = adapt_product(root / "bundle", "weave", normals, shots=4, seed=0, steps=STEPS, samples=SAMPLES)
    return root / "bundle", result


def test_adapt_records_a_checked_decoder_and_enrols_with_it(adapted, weave_parts: list[np.ndarray]) -> None:  # noqa: ANN001
    root, result = adapted
    bundle = Bundle.open(root)  # every file verified, the new decoder included
    entry = bundle.manifest.products["weave"]
    assert entry.decoder == result.adaptation and entry.decoder.file == "products/weave/decoder.onnx"
    assert entry.decoder.file in bundle.manifest.files
    assert entry.decoder.base_decoder_sha256 == bundle.manifest.files[bundle.manifest.decoder.file].sha256
    assert entry.decoder.parity_max_abs_diff <= 1e-2 and entry.decoder.steps == STEPS
    # trained on the shots enrol draws, never on a calibration normal
    calibration = bundle.calibration("weave")
    assert sorted(entry.decoder.shot_images) == sorted(calibration.shot_images)
    assert not set(entry.decoder.shot_images) & set(calibration.calibration_images)
    assert result.calibration_images == 12 and len(calibration.calibration_scores) == 12


def test_the_product_runs_its_own_decoder(adapted, weave_parts: list[np.ndarray]) -> None:  # noqa: ANN001
    root, _ = adapted
    bundle = Bundle.open(root)
    inspector = Inspector(bundle)
    chain = inspector.chain
    own = chain.decoder_for(bundle.manifest.products["weave"].decoder)
    assert own is not None and own is chain.decoder_for(bundle.manifest.products["weave"].decoder)  # opened once
    batch = chain.preprocessor([weave_parts[5]])
    shared, adapted_map = chain.run(batch).decoder_map, chain.run(batch, decoder=own).decoder_map
    assert np.abs(shared - adapted_map).max() > 1e-3  # fine-tuning changed the map
    result = inspector.analyze([weave_parts[5]], "weave")[0]
    fused = inspector.product_model("weave").scorer.fused(chain.run(batch, decoder=own), inspector.input_size,
                                                          bundle.manifest.scoring.smoothing_sigma)
    np.testing.assert_allclose(result.anomaly_map, fused[0], atol=1e-5)  # the verdict came from the product's decoder


def test_re_enrolling_and_calibrating_keep_the_product_decoder(adapted, weave_parts: list[np.ndarray],
                                                              tmp_path: Path) -> None:  # noqa: ANN001
    import shutil

    root, result = adapted
    copy = tmp_path / "bundle"
    shutil.copytree(root, copy)
    bundle = Bundle.open(copy)
    calibration, added = calibrate_product(bundle, "weave", weave_parts[28:32])
    assert added == 4 and Bundle.open(copy).manifest.products["weave"].decoder == result.adaptation
    enroll_product(bundle, "weave", weave_parts[:4], calibration_images=weave_parts[16:24])
    assert Bundle.open(copy).manifest.products["weave"].decoder == result.adaptation
    # other shots, decoder kept: the images it was trained on do not calibrate (they are not held out from it)
    normals = weave_parts[:4] + weave_parts[16:28]
    calibration = enroll_product(bundle, "weave", weave_parts[4:8], calibration_images=normals)
    trained_on = set(result.adaptation.shot_images)
    assert len(trained_on) == 4 and not trained_on & set(calibration.calibration_images)
    assert len(calibration.calibration_images) == len(normals) - 4
    _, added = calibrate_product(bundle, "weave", normals)
    assert added == 0
    enroll_product(bundle, "weave", weave_parts[:4], decoder=None)  # explicitly back to the shared decoder
    assert Bundle.open(copy).manifest.products["weave"].decoder is None


def test_a_failed_parity_check_keeps_the_decoder_the_product_had(adapted, weave_parts: list[np.ndarray],
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import shutil

    import lineguard.export.adapt as adapt

    root, result = adapted
    copy = tmp_path / "bundle"
    shutil.copytree(root, copy)
    monkeypatch.setattr(adapt, "onnx_parity", lambda *args, **kwargs: 1.0)
    with pytest.raises(adapt.AdaptError, match="differs from PyTorch"):
        adapt.adapt_decoder(Bundle.open(copy), weave_parts[:4], "products/weave/decoder.onnx", STEPS, SAMPLES)
    bundle = Bundle.open(copy)  # verifies every checksum: the previous decoder file is untouched
    assert bundle.manifest.products["weave"].decoder == result.adaptation
    assert sorted(p.name for p in (copy / "products" / "weave").iterdir() if p.name.startswith(".")) == []


def test_the_pytorch_reference_refuses_an_adapted_product(adapted) -> None:  # noqa: ANN001
    from lineguard.export.reference_chain import TorchVisionChain

    root, result = adapted
    reference = TorchVisionChain(Bundle.open(root))
    assert reference.decoder_for(None) is None
    with pytest.raises(ValueError, match="shared decoder"):
        reference.decoder_for(result.adaptation)


def test_adapt_cli(bundle_copy: Path, weave_parts: list[np.ndarray], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    from lineguard.cli import main

    normals = write_normals(tmp_path / "normals", weave_parts[:4] + weave_parts[16:20])
    assert main(["adapt", str(bundle_copy), "--product", "weave", "--normals", str(normals), "--steps", "2",
                 "--samples", "8"]) == 0
    out = capsys.readouterr().out
    assert "adapted 'weave': its own decoder (products/weave/decoder.onnx) fine-tuned for 2 steps" in out
    assert "4 held-out calibration image(s)" in out and "calibration at a 0.01 false-reject budget" in out
    assert Bundle.open(bundle_copy).manifest.products["weave"].decoder.shot_images[0] in {
        pixel_digest(cv2.imread(str(p))) for p in sorted(normals.iterdir())}
    enroll = ["enroll", str(bundle_copy), "--product", "weave", "--normals", str(normals)]
    assert main(enroll) == 0  # re-enrolling keeps the product's decoder, and says so
    assert "its own decoder (products/weave/decoder.onnx" in capsys.readouterr().out
    assert main([*enroll, "--shared-decoder", "--orientation", "fixed"]) == 0
    out = capsys.readouterr().out
    assert "; the shared decoder" in out and "(orientation fixed)" in out
    product = Bundle.open(bundle_copy).manifest.products["weave"]
    assert product.decoder is None and product.orientation == "fixed"
    # a readable error, not a traceback
    assert main(["adapt", str(bundle_copy), "--product", "../evil", "--normals", str(normals)]) == 2
    assert "product name" in capsys.readouterr().err
    assert main(["adapt", str(bundle_copy), "--product", "weave", "--normals", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_eval_adapts_the_product_in_its_scratch_copy(bundle_dir: Path, weave_parts: list[np.ndarray],
                                                    ng_weave: np.ndarray, tmp_path: Path) -> None:
    """`eval --adapt`: the product's decoder is adapted on the K shots inside eval's scratch bundle."""
    from lineguard.evaluation.category import evaluate

    category = tmp_path / "data" / "weave"
    write_normals(category / "train" / "good", weave_parts[:4] + weave_parts[16:24])
    write_normals(category / "test" / "good", weave_parts[4:8])
    write_normals(category / "test" / "pasted", [ng_weave])
    before = sorted(p.name for p in bundle_dir.rglob("*"))
    report = evaluate(bundle_dir, tmp_path / "data", "weave", shots=4, seed=0, adapt=True)
    assert report.adapted_decoder_s is not None and report.adapted_decoder_s > 0
    assert report.n_images == 5 and report.n_calibration == 8 and report.image_auroc is not None
    assert sorted(p.name for p in bundle_dir.rglob("*")) == before  # adapted in the scratch copy only
    assert evaluate(bundle_dir, tmp_path / "data", "weave", shots=4, seed=0).adapted_decoder_s is None


def test_a_device_chain_hands_the_stages_to_the_product_decoder(adapted, weave_parts: list[np.ndarray]) -> None:  # noqa: ANN001
    """On a GPU line (IO-bound chain; here on the CPU EP) an adapted product's decoder gets every stage on the
    host and gives the map the plain path gives, without the device chain running the shared decoder too."""
    from lineguard.runtime.inference.chain import VisionChain
    from lineguard.runtime.inference.ort_backend import OrtBoundChain

    root, result = adapted
    bundle = Bundle.open(root)
    chain = VisionChain(bundle, providers=["CPUExecutionProvider"])
    own = chain.decoder_for(result.adaptation)
    batch = chain.preprocessor(weave_parts[8:10])
    plain = chain.run(batch, decoder=own)
    device_runs = []

    class CountingChain(OrtBoundChain):
        def run(self, inputs, host_outputs):  # noqa: ANN001, ANN201
            device_runs.append(list(host_outputs))
            return super().run(inputs, host_outputs)

    chain.device_chain = CountingChain(chain.encoder, chain.decoder, "cpu")
    bound = chain.run(batch, decoder=own)
    np.testing.assert_allclose(bound.decoder_map, plain.decoder_map, atol=1e-6)
    assert set(bound.features) == set(chain.stage_names)
    assert device_runs == []  # the shared decoder did not run for the adapted product
    chain.run(batch)
    assert len(device_runs) == 1  # the shared path keeps the features on the device
