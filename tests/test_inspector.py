"""End to end on the real chain: a defect in a known cell is NG and named; clean parts are OK; and the verdict
made from an inspection's findings (ids, latency, TIMEOUT, the LLM's answer, sizes in mm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.export.synthesis import cut_paste_poisson
from lineguard.export.textures import texture_variants
from lineguard.runtime.contract import LatencyBreakdown, Region, RegionEvidence
from lineguard.runtime.scoring.inspector import (
    Inspection,
    Inspector,
    NonFiniteScoreError,
    UnknownProductError,
)
from lineguard.runtime.scoring.location import GRID_WORDS


@pytest.fixture(scope="module")
def inspector(enrolled_dir: Path) -> Inspector:
    return Inspector(enrolled_dir)


@pytest.mark.parametrize("row, col", [(0, 0), (0, 2), (1, 1), (2, 0), (2, 2), (1, 2)])
def test_pasted_defect_is_ng_in_its_cell(inspector: Inspector, weave_parts, row: int, col: int) -> None:
    part = weave_parts[8 + row + col]
    h, w = part.shape[:2]
    foreign = texture_variants("grain", 1, seed=row * 3 + col)[0]
    centre = (int((col + 0.5) * w / 3), int((row + 0.5) * h / 3))
    defect = cut_paste_poisson(part, foreign, np.random.default_rng(row * 3 + col), 0.11, 0.14,
                               center=centre, opacity=0.5)
    verdict = inspector.inspect(defect.image, "weave")
    assert verdict.verdict == "NG", verdict
    assert verdict.p_value < 0.01
    assert verdict.regions and verdict.regions[0].grid == GRID_WORDS[row][col]
    x, y, bw, bh = verdict.regions[0].bbox
    assert x <= centre[0] <= x + bw and y <= centre[1] <= y + bh


def test_clean_parts_are_ok(inspector: Inspector, weave_parts) -> None:
    verdicts = inspector.inspect_batch(weave_parts[4:8], "weave")
    assert [v.verdict for v in verdicts] == ["OK"] * 4
    assert all(v.regions == [] and v.p_value >= 0.01 for v in verdicts)


def test_verdict_carries_latency_and_bundle(inspector: Inspector, weave_parts) -> None:
    verdict = inspector.inspect(weave_parts[4], "weave")
    lat = verdict.latency_ms
    assert lat.total > 0 and lat.encoder > 0 and lat.total >= lat.encoder
    assert verdict.bundle_id == inspector.bundle.manifest.bundle_id
    assert verdict.decided_by == "few-shot"


def test_batch_equals_single(inspector: Inspector, weave_parts) -> None:
    batch = inspector.analyze(weave_parts[4:7], "weave")
    single = inspector.analyze(weave_parts[5:6], "weave")[0]
    assert batch[1].verdict.score == pytest.approx(single.verdict.score, abs=1e-3)


def test_zero_shot_without_a_product(inspector: Inspector, weave_parts) -> None:
    verdict = inspector.inspect(weave_parts[4], None)
    assert verdict.decided_by == "zero-shot" and verdict.p_value is None
    assert 0.0 <= verdict.score <= 1.0


def test_an_unknown_product_says_so_unquoted(inspector: Inspector, weave_parts) -> None:
    """The message reaches the CLI and the wire as is (KeyError's own str would wrap it in quotes)."""
    with pytest.raises(UnknownProductError) as refused:
        inspector.inspect(weave_parts[4], "gear")
    assert str(refused.value).startswith("product 'gear' is not enrolled in bundle ")


@pytest.mark.parametrize("product", ["weave", None])
def test_a_nan_score_is_never_a_verdict(inspector: Inspector, weave_parts, product: str | None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken chain (NaN map) used to pass as OK: NaN is never above a level nor below a budget."""
    import lineguard.runtime.scoring.inspector as module

    real = module.image_scores
    monkeypatch.setattr(module, "image_scores", lambda maps: np.where(np.arange(len(maps)) == 1, np.nan, real(maps)))
    with pytest.raises(NonFiniteScoreError, match="1 of 2 images a non-finite anomaly score"):
        inspector.analyze(weave_parts[4:6], product)


# -- the verdict, made once from an inspection (no bundle needed) ----------------------------------------

def _inspection(ng: bool = False) -> Inspection:
    evidence = RegionEvidence(brightness="lower", grey_delta=-41.0, grey_delta_sigma=-8.2, texture="unchanged",
                              contrast_ratio=1.0, shape="elongated", shape_from="core", elongation=9.0, solidity=0.6,
                              area_px=300, area_percent=0.6, length_px=90.0, width_px=3.3, peak_vs_normals=1.8,
                              normals_compared=24, likely_kind="scratch or crack", kind_certainty="likely")
    region = Region(grid="top left", bbox=(1, 2, 30, 30), area_fraction=0.04, peak=7.5, evidence=evidence)
    return Inspection("weave", ng=ng, anomaly_map=np.zeros((4, 4), np.float32), model_rgb=np.zeros((4, 4, 3), np.uint8),
                      score=7.5, p_value=1e-4 if ng else 0.4, calibration="conformal", regions=[region] if ng else [],
                      latency=LatencyBreakdown(preprocess=1.0, encoder=5.0, decoder=2.0, scoring=1.0, total=9.0),
                      bundle_id="b1")


def test_to_verdict_carries_ids_latency_and_the_findings() -> None:
    verdict = _inspection(ng=True).to_verdict("cam0", "f1", decode_ms=2.0, total_ms=40.0, mm_per_pixel=0.1)
    assert (verdict.camera_id, verdict.frame_id, verdict.product, verdict.bundle_id) == ("cam0", "f1", "weave", "b1")
    assert (verdict.verdict, verdict.decided_by, verdict.score, verdict.seq) == ("NG", "few-shot", 7.5, 0)
    assert verdict.latency_ms == LatencyBreakdown(decode=2.0, preprocess=1.0, encoder=5.0, decoder=2.0, scoring=1.0,
                                                  total=40.0)
    assert verdict.regions[0].evidence.length_mm == 9.0 and verdict.regions[0].evidence.area_mm2 == 3.0
    plain = _inspection(ng=True).verdict  # what Inspector.inspect returns: no ids, the analysis's own latency
    assert (plain.camera_id, plain.latency_ms.total, plain.regions[0].evidence.length_mm) == ("", 9.0, None)


@pytest.mark.parametrize("llm, timed_out, want", [
    (True, False, ("NG", "llm")), (False, False, ("OK", "llm")), (None, False, ("OK", "few-shot")),
    (True, True, ("TIMEOUT", "few-shot")),
])
def test_to_verdict_takes_the_llm_answer_and_the_deadline(llm: bool | None, timed_out: bool,
                                                          want: tuple[str, str]) -> None:
    verdict = _inspection(ng=False).to_verdict("cam0", "f1", llm_says_anomaly=llm, timed_out=timed_out)
    assert (verdict.verdict, verdict.decided_by) == want
    assert verdict.score == 7.5 and verdict.p_value == 0.4  # the findings stay, whoever decided
