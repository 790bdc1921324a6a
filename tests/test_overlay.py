"""The NG gallery's overlay: heatmap on a fixed scale per decision mode, 3x3 grid, region cells outlined."""

from __future__ import annotations

import cv2
import numpy as np

from lineguard.runtime.contract import Region, Verdict
from lineguard.runtime.http.overlay import map_strength, overlay_jpeg, render_overlay
from lineguard.runtime.line.archive import ArchivedFrame

GREY = np.full((96, 96, 3), 128, np.uint8)


def verdict(mode: str, regions: list[Region] | None = None) -> Verdict:
    return Verdict(frame_id="f", camera_id="c", product="p", verdict="NG", decided_by=mode, regions=regions or [])


def test_strength_uses_a_fixed_scale_so_faint_maps_stay_faint() -> None:
    faint = np.full((8, 8), 1.0, np.float32)  # z of 1: normal variation
    assert map_strength(faint, verdict("few-shot")).max() < 0.2
    hot = faint.copy()
    hot[2, 2] = 30.0
    strength = map_strength(hot, verdict("few-shot"))
    assert strength[2, 2] == 1.0 and strength[0, 0] < 0.05
    probability = np.array([[0.1, 0.9], [np.nan, 2.0]], np.float32)
    assert np.allclose(map_strength(probability, verdict("zero-shot")), [[0.1, 0.9], [0.0, 1.0]])


def test_overlay_colours_the_anomaly_and_outlines_its_cell() -> None:
    anomaly = np.zeros((96, 96), np.float32)
    anomaly[70:90, 70:90] = 12.0  # bottom right
    region = Region(grid="bottom right", bbox=(70, 70, 20, 20), area_fraction=0.04, peak=12.0)
    out = render_overlay(GREY, anomaly, verdict("few-shot", [region]), size=300)
    assert out.shape == (300, 300, 3)
    hot = out[250, 250].astype(int)  # inside the anomaly: JET red dominates (BGR)
    cold = out[30, 30].astype(int)  # far from it: still close to the grey part
    assert hot[2] > hot[0] + 60 and np.abs(cold - 128).max() < 60
    assert (out[202, 230:290] > 240).all()  # the bottom-right cell's outline: white, 3 px around y = 202
    assert not (out[2, 30:90] > 240).all()  # no outline around the top-left cell


def test_overlay_jpeg_decodes() -> None:
    frame = ArchivedFrame(verdict=verdict("zero-shot"), image_rgb=GREY, anomaly_map=np.zeros((96, 96), np.float32))
    image = cv2.imdecode(np.frombuffer(overlay_jpeg(frame, size=200), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (200, 200, 3)
