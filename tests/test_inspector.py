"""End to end on the real chain: a defect in a known cell is NG and named; clean parts are OK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.export.synthesis import cut_paste_poisson
from lineguard.export.textures import texture_variants
from lineguard.runtime.inspector import Inspector
from lineguard.runtime.location import GRID_WORDS


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
