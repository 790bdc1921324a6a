"""3x3 grid words, boxes and area fractions."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.runtime.scoring.location import GRID_WORDS, grid_cell, locate


@pytest.mark.parametrize("row", range(3))
@pytest.mark.parametrize("col", range(3))
def test_each_cell_has_its_word(row: int, col: int) -> None:
    assert grid_cell((row + 0.5) * 100, (col + 0.5) * 100, 300, 300) == GRID_WORDS[row][col]


def test_locate_scales_boxes_to_the_original_image() -> None:
    score = np.zeros((100, 100), np.float32)
    score[10:20, 70:90] = 5.0
    score[15, 80] = 9.0
    score[70:90, 40:60] = 3.0
    regions = locate(score, score > 1.0, original_shape=(200, 400))
    assert [r.grid for r in regions] == ["top right", "bottom"]
    top = regions[0]
    assert top.peak == pytest.approx(9.0)
    assert top.bbox == (280, 20, 80, 20)
    assert top.area_fraction == pytest.approx(200 / 10000)


def test_no_mask_no_regions() -> None:
    assert locate(np.zeros((10, 10), np.float32), np.zeros((10, 10), bool), (10, 10)) == []
