"""Few-shot enrolment from K = 1 and K = 4, and the self-calibration it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.export.synthesis import cut_paste_poisson
from lineguard.export.textures import texture_variants
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.enroll import EnrollmentError, enroll_product
from lineguard.runtime.inspector import Inspector, UnknownProductError


@pytest.mark.parametrize("shots, method", [(1, "leave-one-region-out"), (4, "leave-one-image-out")])
def test_enrolment_writes_memory_and_calibration(bundle_copy: Path, weave_parts, shots: int, method: str) -> None:
    bundle = Bundle.open(bundle_copy)
    calibration = enroll_product(bundle, "weave", weave_parts[:shots])
    assert calibration.method == method
    assert calibration.shots == shots
    assert calibration.n_calibration_scores == shots * calibration.views_per_shot >= 12
    assert set(calibration.components) >= {"decoder", "memory/s2", "statistics/s2"}
    reopened = Bundle.open(bundle_copy)  # checksums of the new files verify
    assert reopened.manifest.products["weave"].shots == shots
    assert reopened.calibration("weave") == calibration
    arrays = reopened.load_arrays(reopened.manifest.products["weave"].memory_file)
    assert arrays["memory/s2"].shape[1] == 40


def test_single_shot_can_say_ng(bundle_copy: Path, weave_parts) -> None:
    """With K = 1 a rank test could never go below p = 1/(n+1); the fitted tail must still flag defects."""
    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:1])
    inspector = Inspector(bundle)
    foreign = texture_variants("grain", 1, seed=3)[0]
    defect = cut_paste_poisson(weave_parts[10], foreign, np.random.default_rng(0), 0.12, 0.16, opacity=0.5).image
    verdict = inspector.inspect(defect, "weave")
    assert verdict.verdict == "NG" and verdict.p_value < 0.01
    assert inspector.inspect(weave_parts[11], "weave").p_value > verdict.p_value


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
    enroll_product(bundle, "weave", weave_parts[:2])
    calib = bundle_copy / "products" / "weave" / "calibration.json"
    calib.write_text(calib.read_text().replace('"shots": 2', '"shots": 3'))
    with pytest.raises(BundleIntegrityError, match="calibration.json"):
        Bundle.open(bundle_copy)
