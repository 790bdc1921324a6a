"""Where is the anomaly: regions of the fused map summarised on a 3x3 grid.

Usage::

    regions = locate(fused_map, anomalous_mask, original_shape=(480, 640))
    regions[0].grid     # "top left"
"""

from __future__ import annotations

import cv2
import numpy as np

from lineguard.runtime.contract import GridCell, Region

GRID_WORDS: tuple[tuple[GridCell, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
MAX_REGIONS = 5


def grid_cell(y: float, x: float, height: int, width: int) -> GridCell:
    """The 3x3 cell word for a point in an image of the given size."""
    row = min(int(3 * y / height), 2)
    col = min(int(3 * x / width), 2)
    return GRID_WORDS[row][col]


def locate(score_map: np.ndarray, mask: np.ndarray, original_shape: tuple[int, int]) -> list[Region]:
    """Connected regions of ``mask``, strongest first, with boxes scaled to the original image.

    ``score_map`` and ``mask`` share the model's input resolution; each region is named by the grid
    cell of its peak, so a region that straddles a border is called where it is worst.
    """
    return [region for region, _ in locate_with_masks(score_map, mask, original_shape)]


def locate_with_masks(
    score_map: np.ndarray, mask: np.ndarray, original_shape: tuple[int, int]
) -> list[tuple[Region, np.ndarray]]:
    """``locate``, each region with its boolean pixel mask at the map's resolution (for its evidence)."""
    mh, mw = score_map.shape
    oh, ow = original_shape
    sy, sx = oh / mh, ow / mw
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    found: list[tuple[Region, int]] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        inside = np.where(labels == label, score_map, -np.inf)
        py, px = np.unravel_index(int(np.argmax(inside)), inside.shape)
        region = Region(
            grid=grid_cell(py + 0.5, px + 0.5, mh, mw),
            bbox=(round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy))),
            area_fraction=area / float(mh * mw),
            peak=float(score_map[py, px]),
        )
        found.append((region, label))
    found.sort(key=lambda item: item[0].peak, reverse=True)
    return [(region, labels == label) for region, label in found[:MAX_REGIONS]]
