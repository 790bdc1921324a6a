"""Evidence per region: descriptors on synthetic defects of known kind, and through a real Inspector."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.runtime.bundle import Bundle
from lineguard.runtime.contract import Verdict
from lineguard.runtime.line.config import CameraConfig
from lineguard.runtime.llm.prompts import describe, explanation_messages
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.runtime.scoring.region_evidence import (
    appearance_maps,
    image_evidence,
    normal_appearance,
    region_evidence,
    regions_in_mm,
)

SIZE = 224


def texture(seed: int) -> np.ndarray:
    """A normal part: a mid-grey, lightly coloured weave-like texture with a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    grey = 120 + 20 * np.sin(x / 3.0 + phase[0]) * np.sin(y / 3.0 + phase[1]) + rng.normal(0, 4, (SIZE, SIZE))
    rgb = np.stack([grey + 10, grey, grey - 10], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def appearance():
    return normal_appearance([texture(s) for s in range(8)])


def evidence_of(image: np.ndarray, mask: np.ndarray, appearance):
    return region_evidence(appearance_maps(image), mask, peak=6.0, original_shape=(480, 480), appearance=appearance,
                           normal_max=4.0, normals=24)


def test_a_dark_thin_line_is_darker_and_elongated(appearance) -> None:
    image = texture(100)
    line = np.zeros((SIZE, SIZE), np.uint8)
    cv2.line(line, (40, 60), (160, 100), 1, 2)
    image[line > 0] = (image[line > 0] * 0.3).astype(np.uint8)
    region = cv2.dilate(line, np.ones((15, 15), np.uint8)) > 0  # the anomaly map's blurred blob around it
    e = evidence_of(image, region, appearance)
    assert e.brightness == "lower" and e.grey_delta < -40 and e.grey_delta_sigma < -3
    assert e.shape == "elongated" and e.shape_from == "core" and e.elongation > 5
    assert e.likely_kind == "scratch or crack" and e.kind_certainty == "likely"
    assert 200 < e.length_px < 320  # ~126 px at 224 is ~270 px of the 480 px original
    assert e.peak_vs_normals == 1.5 and e.normals_compared == 24


def test_a_bright_blob_is_brighter_and_compact(appearance) -> None:
    image = texture(101)
    blob = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(blob, (150, 150), 6, 1, -1)
    image[blob > 0] = np.clip(image[blob > 0].astype(int) + 110, 0, 255).astype(np.uint8)
    e = evidence_of(image, cv2.dilate(blob, np.ones((11, 11), np.uint8)) > 0, appearance)
    assert e.brightness == "higher" and e.grey_delta > 40
    assert e.shape == "compact" and e.elongation < 2 and e.solidity > 0.6
    assert e.likely_kind == "bright spot or inclusion"


def test_a_blurred_patch_loses_texture_energy(appearance) -> None:
    image = texture(102)
    patch = np.zeros((SIZE, SIZE), bool)
    patch[80:150, 60:140] = True
    image[patch] = cv2.GaussianBlur(image, (0, 0), 4)[patch]
    e = evidence_of(image, patch, appearance)
    assert e.texture == "lower" and e.contrast_ratio < 0.7 and e.edges == "lower"
    assert e.brightness == "unchanged" and e.shape == "diffuse"
    assert e.likely_kind == "smeared, worn or blurred area"


def test_a_coloured_stain_shifts_hue(appearance) -> None:
    image = texture(103).astype(np.float32)
    patch = np.zeros((SIZE, SIZE), bool)
    patch[30:90, 120:200] = True
    image[patch] = 0.5 * image[patch] + 0.5 * np.array([60, 70, 200])  # bluish
    e = evidence_of(image.astype(np.uint8), patch, appearance)
    assert e.hue_direction == "bluer" and e.colour_shift_sigma > 3
    assert e.likely_kind == "stain or discoloration"


def test_a_normal_area_is_unchanged(appearance) -> None:
    patch = np.zeros((SIZE, SIZE), bool)
    patch[80:150, 60:140] = True
    e = evidence_of(texture(104), patch, appearance)
    assert (e.brightness, e.texture, e.edges, e.hue_direction) == ("unchanged", "unchanged", "unchanged", "none")


def test_sizes_in_mm_with_the_cameras_pixel_scale(appearance) -> None:
    assert CameraConfig(mm_per_pixel=0.05).mm_per_pixel == 0.05 and CameraConfig().mm_per_pixel is None
    image = texture(105)
    line = np.zeros((SIZE, SIZE), np.uint8)
    cv2.line(line, (40, 60), (160, 100), 1, 2)
    image[line > 0] = 10
    from lineguard.runtime.contract import Region

    e = evidence_of(image, cv2.dilate(line, np.ones((15, 15), np.uint8)) > 0, appearance)
    verdict = Verdict(product="p", verdict="NG", regions=[Region(grid="top", bbox=(0, 0, 1, 1), area_fraction=0.1,
                                                                 peak=6.0, evidence=e)])
    scaled = regions_in_mm(verdict.regions, 0.05)[0].evidence
    assert scaled.length_mm == pytest.approx(e.length_px * 0.05, abs=0.01) and scaled.area_mm2 is not None
    in_mm = verdict.model_copy(update={"regions": regions_in_mm(verdict.regions, 0.05)})
    assert "mm long" in describe(in_mm) and regions_in_mm(verdict.regions, None) is verdict.regions


@pytest.fixture(scope="module")
def inspector(enrolled_dir: Path) -> Inspector:
    return Inspector(Bundle.open(enrolled_dir))


def test_enrolment_stores_normal_appearance(inspector: Inspector) -> None:
    appearance = inspector.product_model("weave").calibration.appearance
    assert appearance is not None and appearance.views >= 4 and appearance.residual_q999 > 0
    assert set(appearance.channels) == {"grey", "contrast", "edges", "a", "b"}


def test_an_ng_verdict_carries_evidence_through_the_inspector(inspector: Inspector, ng_weave, weave_parts) -> None:
    result = inspector.analyze([ng_weave], "weave")[0]
    verdict = result.verdict
    assert verdict.verdict == "NG" and verdict.regions
    for region in verdict.regions:
        e = region.evidence
        assert e is not None and e.normals_compared == 24 and e.likely_kind
    top = verdict.regions[0].evidence
    assert top.peak_vs_normals > 1.0  # NG: beyond every calibration normal
    # the wire carries it (PLCs, MES, the panel)
    assert Verdict.model_validate_json(verdict.model_dump_json()).regions[0].evidence == top
    text = explanation_messages(verdict)[1]["content"]
    assert "normal parts" in text and "Probable defect class" in text and "largest seen among 24" in text
    assert result.evidence is None  # OK frames are not measured unless the LLM verdict asks
    ok = inspector.analyze([weave_parts[13]], "weave")[0]
    assert ok.verdict.verdict == "OK" and not ok.verdict.regions


def test_image_evidence_for_every_frame_when_the_judge_is_on(inspector: Inspector, ng_weave, weave_parts) -> None:
    inspector.image_evidence = True
    try:
        ng, ok = inspector.analyze([ng_weave, weave_parts[13]], "weave")
    finally:
        inspector.image_evidence = False
    assert ng.evidence is not None and ok.evidence is not None and ok.evidence.top is not None
    assert ng.evidence.score_vs_normals > 1.0 > ok.evidence.score_vs_normals
    assert ok.evidence.top.evidence is not None and ok.verdict.regions == []


def test_evidence_costs_little_on_the_verdict_path(inspector: Inspector, ng_weave) -> None:
    result = inspector.analyze([ng_weave], "weave")[0]
    calibration = inspector.product_model("weave").calibration
    image_evidence(result.model_rgb, result.anomaly_map, ng_weave.shape[:2], calibration)  # warm
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        image_evidence(result.model_rgb, result.anomaly_map, ng_weave.shape[:2], calibration)
    ms = (time.perf_counter() - start) * 1e3 / runs
    print(f"evidence of one frame's regions: {ms:.2f} ms")
    assert ms < 25.0  # ~2-5 ms on a shared 2-core runner


def test_faithfulness_scoring_rules() -> None:
    from lineguard.evaluation.explanations import contradictions, named_cells, names_kind, true_cells
    from lineguard.runtime.contract import Region, RegionEvidence

    assert named_cells("A dark scratch in the upper left, reaching the centre and the top.") == [
        "top left", "center", "top"]
    mask = np.zeros((90, 90), bool)
    mask[5:20, 5:40] = True
    assert true_cells(mask) == ["top left", "top"]
    e = RegionEvidence(brightness="lower", grey_delta=-40.0, grey_delta_sigma=-8.0, texture="unchanged",
                       contrast_ratio=1.0, shape="elongated", shape_from="core", elongation=8.0, solidity=0.5,
                       area_px=100, area_percent=0.5, length_px=60.0, width_px=2.0, peak_vs_normals=2.0,
                       normals_compared=24, likely_kind="scratch or crack", kind_certainty="likely")
    verdict = Verdict(product="p", verdict="NG", regions=[Region(grid="top left", bbox=(0, 0, 9, 9),
                                                                 area_fraction=0.1, peak=8.0, evidence=e)])
    assert contradictions("A darker thin scratch at the top left, 40 grey levels.", verdict, "explain") == []
    assert contradictions("A brighter compact spot.", verdict, "explain") == [
        "says 'brighter' where brightness is lower", "says 'compact' where shape is elongated"]
    assert contradictions("It is a stain at the bottom right.", verdict, "kind")[0].startswith("location")
    assert contradictions("It is probably a false alarm.", verdict, "false_alarm")
    assert contradictions("A dark line at the top left, 2x the largest normal, which is a false alarm.", verdict,
                          "explain")
    assert not contradictions("It is unlikely to be a false alarm: 2x the largest normal.", verdict, "false_alarm")
    assert names_kind("Probably a fine scratch.", e) and not names_kind("A dark thin line.", e)
    # the product's own name and negated class words are not claims
    road = verdict.model_copy(update={"product": "road_crack"})
    road.regions[0].evidence = e.model_copy(update={"likely_kind": "stain or discoloration"})
    assert not contradictions("The road_crack (road crack) part shows a stain, not a scratch.", road, "kind")
    assert contradictions("The road_crack part shows a scratch.", road, "kind")
    assert not names_kind("A dark line on road_crack.", e, "road_crack")
    assert not contradictions("It is not brighter; a dark thin scratch.", verdict, "explain")
    road.regions[0].evidence = e.model_copy(update={"likely_kind": "hole, pit or dark spot", "shape": "compact"})
    assert not contradictions("A compact spot with a rougher texture: a hole.", road, "kind")
    assert contradictions("A compact spot: an inclusion.", road, "kind")


def test_region_solidity_uses_the_hull_of_every_pixel() -> None:
    """The hull is taken from the region's outer contour (fast): it must equal the hull of all its pixels."""
    from lineguard.runtime.scoring.region_evidence import _geometry

    rng = np.random.default_rng(5)
    for _ in range(20):
        mask = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 3) > 0.5
        if mask.sum() < 2:
            continue
        ys, xs = np.nonzero(mask)
        hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.float32))
        every_pixel = min(1.0, len(ys) / (cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0))
        assert _geometry(mask, 1.0, 1.0)[1] == pytest.approx(every_pixel, rel=1e-6)
