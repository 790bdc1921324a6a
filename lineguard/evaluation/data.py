"""Evaluation data nobody tuned to: MVTec-AD-layout texture categories from scikit-image's CC0 photos.

Usage::

    from lineguard.evaluation.data import build_texture_set, ensure_texture_set

    build_texture_set("artifacts/eval-data/skimage", seed=0)        # -> ["brick", "grass", "gravel"]
    ensure_texture_set("artifacts/eval-data/skimage", seed=0)       # builds only when missing or stale
    # python -m lineguard.evaluation.data --out artifacts/eval-data/skimage --seed 0

This module writes the set; the photos and their crop process are :mod:`.texture_photos`, the defects
:mod:`.defect_painters`. Each category is one photo that ships inside the scikit-image wheel
(``skimage.data.brick()``, ``grass()``, ``gravel()``: 512x512 greyscale, CC0; nothing is downloaded),
laid out as MVTec-AD::

    C/train/good/000.png ...                      normal crops
    C/test/good/000.png ...                       normal crops
    C/test/<defect>/000.png ...                   one defect each, one folder per defect type
    C/ground_truth/<defect>/000_mask.png          single-channel 0/255, same size as its image
    C/sources.json                                where every file came from (crop box, photometry)

Every image of a category comes from one and the same crop process (:mod:`.texture_photos`); only after
all crops are drawn are they dealt to their roles (:func:`plan_category`). Every image's clean crop can
be re-rendered from ``sources.json`` (``render_crop``), which is how the tests prove the defect lies
inside its mask. Deterministic for a seed.

Why one process: ``eval`` calibrates split-conformally (the K shots build the memory, every other
train/good image calibrates, a test image's p-value is its rank among the calibration scores), which
is valid only when test normals are exchangeable with the calibration normals. A 512 px photo holds
only ~10 disjoint 160 px crops, so crops overlap the shots often; here they do so equally often for
calibration normals, test normals and defect bases (each crop's ``draw`` index in ``sources.json``
records the permutation), so the false-reject rates measure the budget honestly. The price: test
pixels may have been seen in training, as on a line where the same surface comes back, which makes
AUROC on this set read higher than on MVTec-AD, where every image is a new part. (Generator version
1 took train crops from two quadrants and test crops from the other two: calibration crops shared
pixels with the shots and test crops never did, so p-values were optimistic and false rejects high.)
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel

from lineguard.evaluation.defect_painters import DEFECT_TYPES, make_defect
from lineguard.evaluation.texture_photos import (
    GENERATOR_VERSION,
    SAMPLING,
    TEXTURES,
    CropSpec,
    draw_crop,
    load_photo,
    render_crop,
    streams,
)


class CategorySources(BaseModel):
    """``C/sources.json``: the category's photo and every image's crop, role and defect parameters."""

    category: str
    photo: str                      # e.g. "skimage.data.brick"
    photo_shape: tuple[int, int]
    seed: int
    generator_version: int
    crop_region: tuple[int, int, int, int]            # x0, y0, x1, y1 (exclusive): where every crop may lie
    sampling: str = SAMPLING
    images: list[CropSpec]


class TextureSetInfo(BaseModel):
    """``dataset.json`` at the set's root: what was built, so a cache can tell when it is stale."""

    generator_version: int
    seed: int
    n_train: int
    n_test_good: int
    n_test_defect_per_type: int
    categories: list[str]
    defect_types: list[str]


def plan_category(category: str, photo_shape: tuple[int, int], seed: int = 0, n_train: int = 24,
                  n_test_good: int = 16, n_test_defect_per_type: int = 8,
                  defect_types: Sequence[str] = DEFECT_TYPES) -> list[CropSpec]:
    """Every image's clean crop, in file order (no pixels): N crops drawn alike, then randomly dealt to roles.

    The pool of crops depends only on (category, seed, N); which role gets which crop only on an
    independent permutation. Hence train/good, test/good and the defect bases are exchangeable.
    """
    crop_rng, assign_rng, _ = streams(category, seed)
    roles: list[tuple[str, str, str, str | None]] = [
        ("train", "good", f"train/good/{i:03d}.png", None) for i in range(n_train)]
    roles += [("test", "good", f"test/good/{i:03d}.png", None) for i in range(n_test_good)]
    roles += [("test", kind, f"test/{kind}/{i:03d}.png", f"ground_truth/{kind}/{i:03d}_mask.png")
              for kind in defect_types for i in range(n_test_defect_per_type)]
    pool = [draw_crop(photo_shape, crop_rng) for _ in range(len(roles))]
    order = assign_rng.permutation(len(roles))
    return [CropSpec(file=file, split=split, defect=defect, draw=int(d), mask=mask, **pool[d])
            for (split, defect, file, mask), d in zip(roles, order, strict=True)]


# --------------------------------------------------------------------------------------------- sets

def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def _clear_category(cat_dir: Path) -> None:
    """Remove a category folder this module wrote before; refuse anything else."""
    if not cat_dir.exists():
        return
    if not (cat_dir / "sources.json").is_file() and any(cat_dir.iterdir()):
        raise FileExistsError(f"{cat_dir} exists and was not written by lineguard.evaluation.data: not replacing it")
    shutil.rmtree(cat_dir)


def build_category(root: str | Path, category: str, seed: int = 0, n_train: int = 24, n_test_good: int = 16,
                   n_test_defect_per_type: int = 8, defect_types: Sequence[str] = DEFECT_TYPES) -> CategorySources:
    """Write one category (photo ``skimage.data.<category>()``) under ``root``; returns its sources."""
    photo = load_photo(category)
    specs = plan_category(category, (photo.shape[0], photo.shape[1]), seed, n_train, n_test_good,
                          n_test_defect_per_type, defect_types)
    _, _, rng = streams(category, seed)
    cat_dir = Path(root) / category
    _clear_category(cat_dir)
    for spec in specs:
        clean = render_crop(photo, spec)
        if spec.defect == "good":
            _write_png(cat_dir / spec.file, clean)
            continue
        image, mask, params = make_defect(clean, spec.defect, rng, exclude=category)
        spec.defect_params = params
        _write_png(cat_dir / spec.file, image)
        assert spec.mask is not None
        _write_png(cat_dir / spec.mask, (mask > 0).astype(np.uint8) * 255)
    sources = CategorySources(category=category, photo=f"skimage.data.{category}", photo_shape=photo.shape,
                              seed=seed, generator_version=GENERATOR_VERSION,
                              crop_region=(0, 0, photo.shape[1], photo.shape[0]), images=specs)
    (cat_dir / "sources.json").write_text(sources.model_dump_json(indent=1))
    return sources


def build_texture_set(root: str | Path, seed: int = 0, n_train: int = 24, n_test_good: int = 16,
                      n_test_defect_per_type: int = 8, categories: Sequence[str] = TEXTURES,
                      defect_types: Sequence[str] = DEFECT_TYPES) -> list[str]:
    """Write every category under ``root`` (replacing earlier output of this module); their names."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in categories:
        build_category(root, category, seed, n_train, n_test_good, n_test_defect_per_type, defect_types)
    info = TextureSetInfo(generator_version=GENERATOR_VERSION, seed=seed, n_train=n_train, n_test_good=n_test_good,
                          n_test_defect_per_type=n_test_defect_per_type, categories=list(categories),
                          defect_types=list(defect_types))
    (root / "dataset.json").write_text(info.model_dump_json(indent=1))
    return list(categories)


def ensure_texture_set(root: str | Path, seed: int = 0, n_train: int = 24, n_test_good: int = 16,
                       n_test_defect_per_type: int = 8) -> list[str]:
    """The set under ``root``, built only when missing or made by other parameters or generator."""
    root = Path(root)
    wanted = TextureSetInfo(generator_version=GENERATOR_VERSION, seed=seed, n_train=n_train, n_test_good=n_test_good,
                            n_test_defect_per_type=n_test_defect_per_type, categories=list(TEXTURES),
                            defect_types=list(DEFECT_TYPES))
    info_path = root / "dataset.json"
    if info_path.is_file():
        try:
            have = TextureSetInfo.model_validate_json(info_path.read_text())
        except ValueError:
            have = None
        if have == wanted and all((root / c / "sources.json").is_file() for c in wanted.categories):
            return wanted.categories
    return build_texture_set(root, seed, n_train, n_test_good, n_test_defect_per_type)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineguard.evaluation.data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="root folder of the MVTec-AD-layout set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=24, help="train/good images per category")
    parser.add_argument("--test-good", type=int, default=16, help="test/good images per category")
    parser.add_argument("--per-defect", type=int, default=8, help="test images per defect type")
    args = parser.parse_args(argv)
    names = build_texture_set(args.out, args.seed, args.train, args.test_good, args.per_defect)
    print(f"wrote {', '.join(names)} under {args.out} ({len(DEFECT_TYPES)} defect types: {', '.join(DEFECT_TYPES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
