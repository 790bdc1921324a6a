"""Tiles: frames larger than the encoder's input run as tiles of it, and come back stitched where they lay.

CPU tests of the tiling arithmetic, of the chain run as tiles, and of a product enrolled and inspected
as tiles end to end (its calibration scored exactly as the line scores a frame).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_folders import write_normals
from line_helpers import LOOPBACK, frame, inspect_frames

from lineguard.cli import main
from lineguard.export.synthesis import cut_paste_poisson
from lineguard.export.textures import texture_variants
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.tiling import (
    check_tiles,
    from_tiles,
    image_tiles,
    resolve_tiles,
    tiles_for,
    to_tiles,
)
from lineguard.runtime.line.batch_latency import warm_up_sizes
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.enroll import calibrate_product, enroll_product
from lineguard.runtime.scoring.inspector import Inspector


def test_tiles_are_the_frame_cut_row_by_row_and_stitch_back() -> None:
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((2, 3, 6, 9)).astype(np.float32)
    tiles = to_tiles(batch, 3)
    assert tiles.shape == (18, 3, 2, 3) and tiles.flags.c_contiguous
    # image 1, tile (row 2, col 1) is the crop at rows 4:6, cols 3:6
    np.testing.assert_array_equal(tiles[1 * 9 + 2 * 3 + 1], batch[1, :, 4:6, 3:6])
    np.testing.assert_array_equal(from_tiles(tiles, 3), batch)
    maps = tiles[:, 0]  # (B*n*n, h, w) maps stitch the same way
    np.testing.assert_array_equal(from_tiles(maps, 3), batch[:, 0])
    assert from_tiles(tiles, 1) is tiles


def test_tiling_refuses_what_does_not_split() -> None:
    with pytest.raises(ValueError, match="does not split"):
        to_tiles(np.zeros((1, 3, 5, 4), np.float32), 2)
    with pytest.raises(ValueError, match="whole images"):
        from_tiles(np.zeros((3, 4, 2, 2), np.float32), 2)
    for bad in (0, 5):
        with pytest.raises(ValueError, match="1..4"):
            check_tiles(bad)


def test_auto_tiles_only_photos_three_input_sizes_across() -> None:
    size = (224, 224)
    assert tiles_for([(1024, 1024, 3), (700, 900)], size) == 2  # MVTec-style photos
    assert tiles_for([(672, 800, 3)], size) == 2
    assert tiles_for([(671, 2000, 3)], size) == 1  # the short side decides
    assert tiles_for([(1024, 1024, 3), (512, 512, 3)], size) == 1  # the smallest photo decides
    assert tiles_for([(160, 160)], size) == 1


def test_image_tiles_are_what_the_chain_sees_and_auto_resolves_from_the_photos() -> None:
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (700, 760, 3), dtype=np.uint8)
    tiles = image_tiles(photo, 2, (224, 224))
    assert len(tiles) == 4 and all(t.shape == (224, 224, 3) for t in tiles)
    resized = cv2.resize(photo, (448, 448), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(tiles[2], resized[224:, :224])  # row 1, column 0
    assert resolve_tiles("auto", [photo], (224, 224)) == 2 and resolve_tiles(1, [photo], (224, 224)) == 1
    with pytest.raises(ValueError, match="1..4"):
        resolve_tiles(0, [photo], (224, 224))


def test_the_chain_runs_a_large_batch_as_its_tiles(bundle_dir: Path) -> None:
    chain = VisionChain(Bundle.open(bundle_dir))
    h, w = chain.preprocessor.size()
    assert chain.preprocessor.size(2) == (2 * h, 2 * w)
    frames = texture_variants("weave", 2, seed=3, size=2 * h)
    batch = chain.preprocessor(frames, tiles=2)
    assert batch.shape == (2, 3, 2 * h, 2 * w)
    tiled = chain.run(batch, tiles=2)
    whole = chain.run(to_tiles(batch, 2))  # the same tiles, one by one in the batch
    assert tiled.decoder_map.shape == (2, 2 * h, 2 * w)
    np.testing.assert_allclose(tiled.decoder_map, from_tiles(whole.decoder_map, 2), atol=1e-6)
    for stage, features in tiled.features.items():
        np.testing.assert_allclose(features, from_tiles(whole.features[stage], 2), atol=1e-5)
        assert features.shape[2:] == tuple(2 * s for s in whole.features[stage].shape[2:])
    chain.close()


@pytest.fixture(scope="module")
def large_parts() -> list[np.ndarray]:
    """Weave parts 3 input sizes across (672 px): [0:4] shots, [4:8] test, [8:20] calibration."""
    return texture_variants("weave", 20, seed=11, size=672)


@pytest.fixture(scope="module")
def small_defect(large_parts) -> np.ndarray:
    """large_parts[4] with grain pasted in: about 4% of the frame across, 9 px at the input size, 27 px in a tile."""
    foreign = texture_variants("grain", 1, seed=3, size=672)[0]
    return cut_paste_poisson(large_parts[4], foreign, np.random.default_rng(0), 0.03, 0.05, opacity=0.6).image


def test_a_product_of_large_photos_is_enrolled_and_inspected_as_tiles(bundle_copy: Path, large_parts,
                                                                      small_defect) -> None:
    bundle = Bundle.open(bundle_copy)
    calibration = enroll_product(bundle, "sheet", large_parts[:4], calibration_images=large_parts[8:20])
    assert Bundle.open(bundle_copy).manifest.products["sheet"].tiles == 2  # "auto", written to the manifest
    inspector = Inspector(bundle)
    assert inspector.frame_units("sheet") == 4 and inspector.frame_units(None) == 1  # what the batcher plans with
    # a calibration normal is scored exactly as the line scores a frame: its rank is an honest p-value
    again = inspector.analyze(large_parts[8:10], "sheet")
    np.testing.assert_allclose([r.score for r in again], calibration.calibration_scores[:2], rtol=1e-5)
    assert again[0].anomaly_map.shape == again[0].model_rgb.shape[:2] == (448, 448)
    verdict = inspector.inspect(small_defect, "sheet")
    assert verdict.verdict == "NG" and verdict.regions
    assert inspector.inspect(large_parts[5], "sheet").p_value > verdict.p_value
    # later calibration images are scored as tiles too
    more, added = calibrate_product(bundle, "sheet", large_parts[10:12] + [large_parts[6]])
    assert added == 1 and more.calibration_scores[-1] == pytest.approx(inspector.analyze([large_parts[6]], "sheet")[0].score,
                                                                       rel=1e-5)


def test_tiles_can_be_chosen_and_are_checked(bundle_copy: Path, weave_parts) -> None:
    bundle = Bundle.open(bundle_copy)
    enroll_product(bundle, "weave", weave_parts[:2], tiles=1)
    assert bundle.manifest.products["weave"].tiles == 1
    with pytest.raises(ValueError, match="1..4"):
        enroll_product(bundle, "weave", weave_parts[:2], tiles=5)
    manifest = bundle.manifest.model_dump()
    manifest["products"]["weave"]["tiles"] = 9
    with pytest.raises(ValueError):  # a manifest edited by hand is refused as it is read
        type(bundle.manifest).model_validate(manifest)


def test_enroll_says_when_a_product_is_inspected_as_tiles(bundle_copy: Path, large_parts, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    normals = write_normals(tmp_path / "normals", large_parts[:6])
    assert main(["enroll", str(bundle_copy), "--product", "sheet", "--normals", str(normals), "--shots", "2"]) == 0
    assert "frames inspected at 448x448 as 2x2 tiles" in capsys.readouterr().out
    assert main(["enroll", str(bundle_copy), "--product", "flat", "--normals", str(normals), "--shots", "2",
                 "--tiles", "1"]) == 0
    assert "tiles" not in capsys.readouterr().out
    assert Bundle.open(bundle_copy).manifest.products["flat"].tiles == 1
    with pytest.raises(SystemExit):  # argparse: "argument --tiles: '0': auto, or tiles per side 1..4"
        main(["enroll", str(bundle_copy), "--product", "x", "--normals", str(normals), "--tiles", "0"])
    assert "auto, or tiles per side 1..4" in capsys.readouterr().err


def test_a_tiled_products_own_decoder_trains_on_its_tiles(bundle_copy: Path, large_parts) -> None:
    """`lineguard adapt` on large photos: the decoder fine-tunes on the tiles the line will show it, and the
    product is enrolled as tiles with it; the shots it trained on (whole photos) never calibrate."""
    pytest.importorskip("torch")
    from lineguard.export.adapt import adapt_product

    normals = write_normals(bundle_copy.parent / "large", large_parts[:2] + large_parts[8:12])
    result = adapt_product(bundle_copy, "sheet", normals, shots=2, steps=2, samples=8)
    entry = Bundle.open(bundle_copy).manifest.products["sheet"]
    assert entry.tiles == 2 and entry.decoder == result.adaptation
    assert sorted(result.adaptation.shot_images) == sorted(result.calibration.shot_images)  # the photos, not tiles
    assert result.training.images == 2 * 4  # the tiles of the 2 shots
    assert len(result.calibration.calibration_scores) == 4
    verdict = Inspector(Bundle.open(bundle_copy)).inspect(large_parts[4], "sheet")
    assert verdict.verdict in ("OK", "NG") and verdict.p_value is not None


def test_a_line_serves_a_tiled_product_beside_a_whole_one(enrolled_dir: Path, large_parts, small_defect, weave_parts,
                                                          tmp_path: Path) -> None:
    """Over ZeroMQ, frames of a tiled product and of a whole one in one line: one verdict each, each product
    scored as it was enrolled (the tiled one finds a small defect)."""
    copy = tmp_path / "bundle"
    shutil.copytree(enrolled_dir, copy)
    enroll_product(Bundle.open(copy), "sheet", large_parts[:4], calibration_images=large_parts[8:20])
    config = LineConfig(line="l1", endpoints=LOOPBACK, deadline_ms=30_000, heartbeat_interval_ms=100,
                        products=["sheet", "weave"])
    frames = [frame("cam0", "s-ok", large_parts[5], product="sheet"), frame("cam1", "w-ok", weave_parts[5]),
              frame("cam0", "s-ng", small_defect, product="sheet"), frame("cam1", "w-ok2", weave_parts[6])]
    with LineServer(Inspector(copy), config) as server:
        verdicts = inspect_frames(server.endpoints.inspect, frames)
        measured = server.batcher.latency.measured()
    # the warm-up timed the tiled product's batches as their units: 4 a frame
    assert {4 * size for size in warm_up_sizes(config.batching.max_batch)} <= set(measured)
    assert [v.frame_id for v in verdicts] == ["s-ok", "w-ok", "s-ng", "w-ok2"]
    assert [v.verdict for v in verdicts] == ["OK", "OK", "NG", "OK"]
    assert all(v.decided_by == "few-shot" and v.error is None for v in verdicts)


@pytest.mark.slow
def test_int8_of_a_tiled_product_calibrates_on_its_tiles(bundle_copy: Path, large_parts, small_defect,
                                                         tmp_path: Path) -> None:
    """`export int8 --product` quantises the encoder on what it sees for that product: the tiles of its normals
    (5 normals x 4 tiles here), then checks the product's verdicts through the tiled inspector."""
    pytest.importorskip("onnxruntime.quantization")
    from lineguard.export.cpu_int8 import export_int8

    enroll_product(Bundle.open(bundle_copy), "sheet", large_parts[:4], calibration_images=large_parts[8:20])
    data = tmp_path / "data"
    write_normals(data / "sheet" / "train" / "good", large_parts[:5])
    write_normals(data / "sheet" / "test" / "good", large_parts[5:7])
    write_normals(data / "sheet" / "test" / "defect", [small_defect])
    record = export_int8(bundle_copy, "sheet", data)
    assert record.calibration_images == 5 * 4 - 1  # the last tile is held out for the feature check
    assert record.checks["sheet"].n_images == 3
