"""lineguard.evaluation.data (with texture_photos and defect_painters): MVTec-AD layout, masks that hold
the defects, determinism, exchangeable splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import ks_2samp

from lineguard.evaluation.data import (
    CategorySources,
    build_texture_set,
    ensure_texture_set,
    plan_category,
)
from lineguard.evaluation.defect_painters import DEFECT_TYPES, MIN_CHANGE, make_defect
from lineguard.evaluation.texture_photos import GENERATOR_VERSION, TEXTURES, CropSpec, load_photo, render_crop

SMALL = {"n_train": 5, "n_test_good": 3, "n_test_defect_per_type": 2}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("texture-set")
    return root, build_texture_set(root, seed=0, **SMALL)


def _sources(root: Path, category: str) -> CategorySources:
    return CategorySources.model_validate_json((root / category / "sources.json").read_text())


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_mvtec_layout_and_masks_match_images(small_set: tuple[Path, list[str]]) -> None:
    root, categories = small_set
    assert categories == ["brick", "grass", "gravel"]
    for category in categories:
        cat = root / category
        assert len(list((cat / "train" / "good").glob("*.png"))) == SMALL["n_train"]
        assert len(list((cat / "test" / "good").glob("*.png"))) == SMALL["n_test_good"]
        assert not (cat / "ground_truth" / "good").exists()
        assert sorted(p.name for p in (cat / "test").iterdir()) == sorted(("good", *DEFECT_TYPES))
        for kind in DEFECT_TYPES:
            images = sorted((cat / "test" / kind).glob("*.png"))
            assert len(images) == SMALL["n_test_defect_per_type"]
            for path in images:
                mask = cv2.imread(str(cat / "ground_truth" / kind / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                assert mask is not None and mask.ndim == 2 and mask.dtype == np.uint8
                assert mask.shape == image.shape[:2]
                assert set(np.unique(mask).tolist()) == {0, 255}
                assert 160 <= image.shape[0] == image.shape[1] <= 240


def test_defects_lie_inside_their_masks(small_set: tuple[Path, list[str]]) -> None:
    root, categories = small_set
    for category in categories:
        photo = load_photo(category)
        for spec in _sources(root, category).images:
            clean = render_crop(photo, spec)
            image = cv2.imread(str(root / category / spec.file), cv2.IMREAD_UNCHANGED)
            if spec.defect == "good":
                assert np.array_equal(image, clean), spec.file
                continue
            mask = cv2.imread(str(root / category / spec.mask), cv2.IMREAD_UNCHANGED) > 0
            diff = np.abs(image.astype(np.int16) - clean)
            assert diff[mask].mean() >= MIN_CHANGE / 2, (spec.file, diff[mask].mean())
            far = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
            assert far.any() and not diff[far].any(), spec.file


def _role(spec: CropSpec) -> str:
    return "train" if spec.split == "train" else ("test_good" if spec.defect == "good" else "defect_base")


def _pool(specs: list[CropSpec]) -> dict[int, tuple]:
    return {s.draw: (s.box, s.gain, s.bias, s.gamma, s.noise_sigma, s.noise_seed) for s in specs}


def test_one_crop_process_for_every_split_then_a_permutation(small_set: tuple[Path, list[str]]) -> None:
    root, categories = small_set
    n = SMALL["n_train"] + SMALL["n_test_good"] + SMALL["n_test_defect_per_type"] * len(DEFECT_TYPES)
    for category in categories:
        sources = _sources(root, category)
        h, w = sources.photo_shape
        assert sources.generator_version == GENERATOR_VERSION >= 2
        assert sources.crop_region == (0, 0, w, h)                          # whole photo, for every split
        assert sorted(s.draw for s in sources.images) == list(range(n))    # each crop dealt exactly once
        for spec in sources.images:
            x, y, side = spec.box
            assert x >= 0 and y >= 0 and x + side <= w and y + side <= h
        # the pool of crops does not depend on how many go to which role: same seed and N, roles
        # divided differently -> the very same crops, only dealt differently
        swapped = plan_category(category, (h, w), seed=0, n_train=SMALL["n_test_good"],
                                n_test_good=SMALL["n_train"],
                                n_test_defect_per_type=SMALL["n_test_defect_per_type"])
        assert _pool(swapped) == _pool(sources.images)
        assert [s.draw for s in sources.images] != list(range(n))          # dealt at random, not in draw order


def test_splits_are_exchangeable_in_position_size_and_overlap_with_the_shots() -> None:
    """Split conformal calibration needs test normals exchangeable with the calibration normals."""
    shape = (512, 512)
    centres: dict[str, list[tuple[float, float, int]]] = {"train": [], "test_good": [], "defect_base": []}
    overlap: dict[str, list[float]] = {"calibration": [], "test_good": [], "defect_base": []}
    for seed in range(40):
        for category in TEXTURES:
            specs = plan_category(category, shape, seed)
            for spec in specs:
                x, y, side = spec.box
                centres[_role(spec)].append((x + side / 2, y + side / 2, side))
            train = [s for s in specs if s.split == "train"]
            shots = set(np.random.default_rng(seed).choice(len(train), 4, replace=False).tolist())
            seen = np.zeros(shape, bool)
            for i in shots:
                x, y, side = train[i].box
                seen[y : y + side, x : x + side] = True
            calibration = [s for i, s in enumerate(train) if i not in shots]
            for role, members in (("calibration", calibration),
                                  *((r, [s for s in specs if _role(s) == r]) for r in ("test_good", "defect_base"))):
                for spec in members:
                    x, y, side = spec.box
                    overlap[role].append(float(seen[y : y + side, x : x + side].mean()))
            if seed == 0:                                # the default set: every split sees every quadrant
                for role in centres:
                    quadrants = {(x + s / 2 >= shape[1] / 2, y + s / 2 >= shape[0] / 2)
                                 for spec in specs if _role(spec) == role for x, y, s in [spec.box]}
                    assert len(quadrants) == 4, (category, role, quadrants)
    train = np.array(centres["train"])
    for role in ("test_good", "defect_base"):
        other = np.array(centres[role])
        for j, what in enumerate(("centre x", "centre y", "side")):
            assert ks_2samp(train[:, j], other[:, j]).pvalue > 0.01, (role, what)
    # pixels shared with the shots: as likely for a test normal (or a defect's base) as for a calibration normal
    cal = np.mean(overlap["calibration"])
    assert cal > 0.3                                     # crops do overlap the shots ...
    for role in ("test_good", "defect_base"):
        assert abs(np.mean(overlap[role]) - cal) < 0.03, (role, np.mean(overlap[role]), cal)   # ... equally


def test_deterministic_for_a_seed(small_set: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, _ = small_set
    again = tmp_path / "again"
    build_texture_set(again, seed=0, **SMALL)
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    build_texture_set(other, seed=1, categories=("brick",), **SMALL)
    assert _digest(other) != {k: v for k, v in _digest(root).items() if k.startswith("brick")}


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_each_defect_type_changes_the_surface_only_near_its_mask(kind: str) -> None:
    rng = np.random.default_rng(3)
    clean = np.ascontiguousarray(load_photo("gravel")[:200, :200])
    image, mask, params = make_defect(clean, kind, rng, exclude="gravel")
    assert image.shape == clean.shape and image.dtype == np.uint8 and mask.shape == clean.shape
    assert 0 < mask.sum() < 0.25 * mask.size
    diff = np.abs(image.astype(np.int16) - clean)
    assert diff[mask > 0].mean() >= MIN_CHANGE
    assert not diff[cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0].any()
    if kind == "foreign":
        assert params["source"] != "gravel"


def test_ensure_reuses_a_fresh_set_and_refuses_foreign_folders(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    small = {"n_train": 2, "n_test_good": 1, "n_test_defect_per_type": 1}
    assert ensure_texture_set(root, seed=0, **small) == ["brick", "grass", "gravel"]
    first = (root / "brick" / "sources.json").stat().st_mtime_ns
    ensure_texture_set(root, seed=0, **small)
    assert (root / "brick" / "sources.json").stat().st_mtime_ns == first
    ensure_texture_set(root, seed=5, **small)
    assert '"seed": 5' in (root / "dataset.json").read_text()
    # a set made by an older generator (v1: train and test crops from different quadrants) is rebuilt
    info = root / "dataset.json"
    info.write_text(info.read_text().replace(f'"generator_version": {GENERATOR_VERSION}', '"generator_version": 1'))
    ensure_texture_set(root, seed=5, **small)
    assert f'"generator_version": {GENERATOR_VERSION}' in info.read_text()
    assert _sources(root, "brick").generator_version == GENERATOR_VERSION

    mine = tmp_path / "mine"
    (mine / "brick").mkdir(parents=True)
    (mine / "brick" / "notes.txt").write_text("someone's data")
    with pytest.raises(FileExistsError, match="not written by lineguard.evaluation.data"):
        build_texture_set(mine, **small)
    assert (mine / "brick" / "notes.txt").is_file()
