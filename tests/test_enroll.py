"""Few-shot enrolment from K = 1 and K = 4, the calibration it writes, and `calibrate` adding normals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.export.synthesis import cut_paste_poisson
from lineguard.export.textures import texture_variants
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.scoring.enroll import (
    EnrollmentError,
    calibrate_product,
    enroll_product,
    turned_and_mirrored,
)
from lineguard.runtime.scoring.inspector import Inspector, UnknownProductError


@pytest.mark.parametrize("shots, method", [(1, "leave-one-region-out"), (4, "leave-one-image-out")])
def test_enrolment_writes_memory_and_calibration(bundle_copy: Path, weave_parts, shots: int, method: str) -> None:
    bundle = Bundle.open(bundle_copy)
    calibration = enroll_product(bundle, "weave", weave_parts[:shots], calibration_images=weave_parts[16:24])
    assert calibration.method == method
    assert calibration.shots == shots
    assert len(calibration.view_scores) == shots * calibration.views_per_shot >= 12
    assert len(calibration.calibration_scores) == len(set(calibration.calibration_images)) == 8
    assert set(calibration.components) == {"decoder", "memory/s2", "memory/s3", "statistics/s3"}  # the bundle's spec
    reopened = Bundle.open(bundle_copy)  # checksums of the new files verify
    assert reopened.manifest.products["weave"].shots == shots
    assert reopened.calibration("weave") == calibration
    arrays = reopened.load_arrays(reopened.manifest.products["weave"].memory_file)
    assert arrays["memory/s2"].shape[1] == 40
    assert arrays["precision/s3"].shape == (112, 112) and "precision/s2" not in arrays


def test_single_shot_can_say_ng(bundle_copy: Path, weave_parts) -> None:
    """K = 1 with 24 calibration normals: the rank test alone stops at p = 1/25, so the fitted tail decides
    beyond the largest calibration score, and verdicts say so."""
    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:1], calibration_images=weave_parts[16:40])
    inspector = Inspector(bundle)
    foreign = texture_variants("grain", 1, seed=3)[0]
    defect = cut_paste_poisson(weave_parts[10], foreign, np.random.default_rng(0), 0.12, 0.16, opacity=0.5).image
    verdict = inspector.inspect(defect, "weave")
    assert verdict.verdict == "NG" and verdict.p_value < 0.01 and verdict.calibration == "tail"
    assert verdict.p_value >= 1 / 25 / 100  # extrapolated at most two decades below the resolution
    assert inspector.inspect(weave_parts[11], "weave").p_value > verdict.p_value


def test_without_calibration_images_verdicts_are_provisional(bundle_copy: Path, weave_parts) -> None:
    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:4])
    verdict = Inspector(bundle).inspect(weave_parts[5], "weave")
    assert verdict.calibration == "provisional" and verdict.decided_by == "few-shot"


def test_calibrate_adds_images_once_and_keeps_the_memory(bundle_copy: Path, weave_parts) -> None:
    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:4], calibration_images=weave_parts[16:26])
    memory_sha = bundle.manifest.files["products/weave/memory.npz"].sha256
    inspector = Inspector(Bundle.open(bundle_copy), false_reject_budget=0.05)
    assert inspector.calibration_status("weave") == "tail"  # 10 images: p >= 1/11 > 5%

    # 20..25 are already counted and the shots 0..3 are the memory's own: neither counts (again)
    calibration, added = calibrate_product(bundle, "weave", [*weave_parts[:4], *weave_parts[20:36]])
    assert added == 10 and len(calibration.calibration_scores) == 20
    reopened = Bundle.open(bundle_copy)
    assert reopened.manifest.files["products/weave/memory.npz"].sha256 == memory_sha
    assert reopened.calibration("weave").calibration_images == calibration.calibration_images

    assert inspector.reload_products() == ["weave"]  # a running inspector picks it up: no restart
    assert inspector.calibration_status("weave") == "conformal"  # 20 images: p >= 1/21 resolves 5%
    assert not inspector.reload_products()  # nothing changed since
    assert calibrate_product(bundle, "weave", weave_parts[20:30])[1] == 0  # all counted: the bundle is not rewritten
    assert not inspector.reload_products()


def test_a_reload_reads_only_the_products_files_and_refuses_what_it_cannot_take(
        bundle_copy: Path, weave_parts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line re-reads the bundle on its serving loop: it hashes the products' files, not the models (a
    GGUF of hundreds of MB); a manifest whose models changed needs a restart, and a signed bundle's
    re-read checks the signature with the key it was opened with."""
    import json

    import lineguard.runtime.bundle.store as store
    from lineguard.runtime.bundle.signature import (
        BundleSignatureError,
        create_signing_key,
        load_private_key,
        sign_bundle,
        sign_manifest,
    )

    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:4], calibration_images=weave_parts[16:26])
    unseen = texture_variants("weave", 52, seed=7)[40:52]  # normals neither the memory nor calibration has
    private, public = create_signing_key(tmp_path / "keys", "release")
    sign_bundle(bundle_copy, private)
    inspector = Inspector(Bundle.open(bundle_copy, trusted_key=public), false_reject_budget=0.05)
    inspector.calibration_status("weave")

    hashed: list[str] = []
    real_sha = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda path: hashed.append(Path(path).name) or real_sha(path))
    calibrate_product(Bundle.open(bundle_copy), "weave", unseen[:6])
    sign_bundle(bundle_copy, private)
    hashed.clear()
    assert inspector.reload_products() == ["weave"]
    assert sorted(hashed) == ["calibration.json", "memory.npz"]  # the product's files alone

    # a tampered calibration with its checksum rewritten, but not re-signed: refused, weave served as loaded
    served = inspector.product_model("weave").calibration
    calibrate_product(Bundle.open(bundle_copy), "weave", unseen[6:])
    with pytest.raises(BundleSignatureError):
        inspector.reload_products()
    assert inspector.product_model("weave").calibration == served
    assert inspector.reload_products() == []  # the same refused manifest is not hashed again every heartbeat

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    encoder = manifest["encoder"]["file"]
    manifest["files"][encoder]["sha256"] = "0" * 64  # another encoder: the running chain cannot take it
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    # signed as it is (sign_bundle would refuse it: the encoder file no longer matches)
    signature = sign_manifest((bundle_copy / "manifest.json").read_bytes(), load_private_key(private))
    (bundle_copy / "manifest.sig").write_text(signature.model_dump_json())
    with pytest.raises(ValueError, match=f"models changed on disk \\({encoder}\\): restart"):
        inspector.reload_products()


@pytest.mark.parametrize("n_calibration, status", [(39, "conformal"), (16, "tail")])
def test_budget_holds_on_held_out_normals(bundle_copy: Path, n_calibration: int, status: str) -> None:
    """Real chain, real enrolment: calibrate on n normals, judge 60 further normals of the product at a 5%
    budget. With 39 the rank test alone decides; with 16 (1/17 is above 5%) the predictive tail decides
    beyond the largest calibration score. Either way the false rejects stay within a binomial bound of the
    budget."""
    from scipy.stats import binom

    parts = texture_variants("cells", 4 + n_calibration + 60, seed=11)
    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "cells", parts[:4], calibration_images=parts[4 : 4 + n_calibration])
    inspector = Inspector(bundle, false_reject_budget=0.05)
    verdicts = inspector.inspect_batch(parts[4 + n_calibration :], "cells")
    assert {v.calibration for v in verdicts} == {status}
    if status == "conformal":
        assert all(v.p_value >= 1 / 40 for v in verdicts)  # the resolution of 39 calibration images
    rejects = sum(v.verdict == "NG" for v in verdicts)
    # the rate conditional on one calibration draw scatters around the budget (Beta law): allow it up to
    # twice the budget at 1-in-1000 odds; the old view-based calibration rejected 27% of real normals
    assert binom.sf(rejects - 1, len(verdicts), 0.10) > 1e-3, rejects


def test_enrolment_errors(bundle_copy: Path, weave_parts) -> None:
    bundle = Bundle.open(bundle_copy)
    with pytest.raises(EnrollmentError, match="at least one"):
        enroll_product(bundle, "weave", [])
    with pytest.raises(EnrollmentError, match="product name"):
        enroll_product(bundle, "../evil", weave_parts[:1])
    with pytest.raises(UnknownProductError, match="not enrolled"):
        Inspector(bundle).inspect(weave_parts[0], "nothing-here")


def test_enrolled_files_are_checksummed(bundle_copy: Path, weave_parts) -> None:
    from lineguard.runtime.bundle import BundleIntegrityError

    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:2], calibration_images=weave_parts[16:18])
    calib = bundle_copy / "products" / "weave" / "calibration.json"
    calib.write_text(calib.read_text().replace('"shots": 2', '"shots": 3'))
    with pytest.raises(BundleIntegrityError, match="calibration.json"):
        Bundle.open(bundle_copy)


def test_a_product_fuses_only_the_families_it_was_enrolled_with(bundle_copy: Path, weave_parts, ng_weave) -> None:
    """The ablation's mechanism (`eval --without`): a family left out has no norms and is not fused."""
    bundle = Bundle.open(bundle_copy)
    calibration = enroll_product(bundle, "weave", weave_parts[:4], calibration_images=weave_parts[16:40],
                                 families=("memory",))
    assert {name.split("/")[0] for name in calibration.components} == {"memory"}
    inspector = Inspector(bundle)
    assert inspector.inspect(ng_weave, "weave").verdict == "NG"
    assert inspector.inspect(weave_parts[6], "weave").verdict == "OK"
    with pytest.raises(EnrollmentError, match="families"):
        enroll_product(bundle, "weave", weave_parts[:4], families=("colour",))


def test_turned_and_mirrored_gives_every_other_orientation_once() -> None:
    rng = np.random.default_rng(0)
    square = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    views = turned_and_mirrored(square)
    keys = {v.tobytes() for v in [square, *views]}
    assert len(views) == 7 and len(keys) == 8  # the square's 8 symmetries, each once
    assert all(v.shape == square.shape and v.flags.c_contiguous for v in views)
    oblong = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    assert [v.shape for v in turned_and_mirrored(oblong)] == [oblong.shape] * 3  # 180 degrees and two mirrors


def stripes(angle_deg: float, phase: float, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A directional surface: sinusoidal stripes at ``angle_deg`` with camera noise (BGR uint8)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = np.deg2rad(angle_deg)
    wave = np.sin((x * np.cos(theta) + y * np.sin(theta)) * 2 * np.pi / 14 + phase)
    gray = 128 + 70 * wave + rng.normal(0, 6, wave.shape)
    return cv2.cvtColor(np.clip(gray, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def test_the_memory_holds_the_shots_turned_unless_the_orientation_is_fixed(bundle_copy: Path) -> None:
    """Stripes at 30 degrees enrolled; a part turned by 90 degrees (stripes at 120) is foreign to a fixed
    memory (NG) and normal to one that holds the shots turned (the default), while an untouched part is OK
    either way."""
    rng = np.random.default_rng(0)
    parts = [stripes(30, rng.uniform(0, 2 * np.pi), rng) for _ in range(32)]
    turned_part = np.ascontiguousarray(np.rot90(parts[-1]))
    verdicts = {}
    for orientation in ("fixed", "any"):
        bundle = Bundle.open(bundle_copy)
        enroll_product(bundle, "stripes", parts[:2], calibration_images=parts[2:30], orientation=orientation)
        assert Bundle.open(bundle_copy).manifest.products["stripes"].orientation == orientation
        inspector = Inspector(bundle)
        verdicts[orientation] = inspector.inspect_batch([turned_part, parts[30]], "stripes")
    assert [v.verdict for v in verdicts["fixed"]] == ["NG", "OK"]
    assert [v.verdict for v in verdicts["any"]] == ["OK", "OK"]
    assert verdicts["any"][0].p_value > 10 * verdicts["fixed"][0].p_value
