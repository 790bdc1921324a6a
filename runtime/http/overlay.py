"""Anomaly heatmap over the inspected image, as technicians see it in the panel's NG gallery.

Usage::

    frame = archive.load("cam0", "frame-000123")
    jpeg = overlay_jpeg(frame, size=448)             # bytes, ready to serve as image/jpeg

The map is coloured with OpenCV's JET colormap and blended in proportion to its strength, so normal
areas keep the part's own look; the 3x3 location grid is drawn, and the cells that hold a region
(``Verdict.regions[*].grid``) are outlined. Few-shot maps are in z units (anything under ~3 is normal
variation), zero-shot maps are probabilities: each gets its own fixed scale, so a faint map stays faint.
"""

from __future__ import annotations

import cv2
import numpy as np

from lineguard.runtime.contract import Verdict
from lineguard.runtime.line.archive import ArchivedFrame
from lineguard.runtime.scoring.location import GRID_WORDS

Z_SCALE_FLOOR = 6.0  # few-shot maps: z of 6 and above is full red (a smaller max keeps this scale)
CELL_COLOUR_BGR = (255, 255, 255)
GRID_COLOUR_BGR = (200, 200, 200)


def map_strength(anomaly_map: np.ndarray, verdict: Verdict) -> np.ndarray:
    """The map on a 0..1 scale fixed per decision mode (not per image: an OK frame must not look hot)."""
    values = np.nan_to_num(anomaly_map.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if verdict.decided_by == "few-shot":
        scale = max(Z_SCALE_FLOOR, float(values.max()))
        return np.clip(values / scale, 0.0, 1.0)
    return np.clip(values, 0.0, 1.0)


def render_overlay(image_rgb: np.ndarray, anomaly_map: np.ndarray, verdict: Verdict, size: int = 448) -> np.ndarray:
    """BGR image of ``size`` x ``size``: the part, the heatmap blended by strength, the 3x3 grid."""
    image = cv2.resize(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), (size, size), interpolation=cv2.INTER_LINEAR)
    strength = cv2.resize(map_strength(anomaly_map, verdict), (size, size), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap((strength * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.15 + 0.6 * strength)[..., None]
    out = (image * (1.0 - alpha) + colours * alpha).astype(np.uint8)
    step = size / 3
    for i in (1, 2):
        cv2.line(out, (round(i * step), 0), (round(i * step), size - 1), GRID_COLOUR_BGR, 1, cv2.LINE_AA)
        cv2.line(out, (0, round(i * step)), (size - 1, round(i * step)), GRID_COLOUR_BGR, 1, cv2.LINE_AA)
    for cell in {region.grid for region in verdict.regions}:
        row = next(r for r, words in enumerate(GRID_WORDS) if cell in words)
        col = GRID_WORDS[row].index(cell)
        top_left = (round(col * step) + 2, round(row * step) + 2)
        bottom_right = (round((col + 1) * step) - 3, round((row + 1) * step) - 3)
        cv2.rectangle(out, top_left, bottom_right, CELL_COLOUR_BGR, 3, cv2.LINE_AA)
    return out


def overlay_jpeg(frame: ArchivedFrame, size: int = 448, quality: int = 90) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", render_overlay(frame.image_rgb, frame.anomaly_map, frame.verdict, size),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding of the overlay failed")
    return jpeg.tobytes()
