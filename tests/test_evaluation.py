"""``lineguard eval`` on a generated MVTec-AD-style folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.cli import main
from lineguard.evaluation.mvtec_layout import labelled_test_images, read_mask
from lineguard.export.sample_data import write_category
from lineguard.runtime.image_io import ImageReadError


def test_eval_writes_the_report(bundle_dir: Path, tmp_path: Path) -> None:
    write_category(tmp_path / "data", "cells", family="cells", seed=4, train=6, test_good=8, test_defect=8)
    out = tmp_path / "eval.json"
    assert main(["eval", str(bundle_dir), "--data", str(tmp_path / "data"), "--category", "cells",
                 "--shots", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"image_auroc", "pixel_auroc", "accuracy", "n_images", "ms_per_image"}
    assert report["n_images"] == 16
    assert report["image_auroc"] > 0.8
    assert report["pixel_auroc"] > 0.8
    assert report["accuracy"] > 0.6
    assert "products" not in json.loads((bundle_dir / "manifest.json").read_text()) or \
        "cells" not in json.loads((bundle_dir / "manifest.json").read_text())["products"]


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((16, 16), value, np.uint8))


def test_masks_are_found_under_each_naming_of_mvtec_style_sets(tmp_path: Path) -> None:
    cat = tmp_path / "part"
    _png(cat / "test" / "good" / "000.png")
    _png(cat / "test" / "crack" / "000.png")      # MVTec AD, MPDD: <stem>_mask.png
    _png(cat / "ground_truth" / "crack" / "000_mask.png", 255)
    _png(cat / "test" / "crack" / "001.bmp")      # VisA's MVTec-style split: <stem>.png
    _png(cat / "ground_truth" / "crack" / "001.png", 255)
    _png(cat / "test" / "crack" / "002.png")      # no mask: still a test image, image metrics only
    _png(cat / "test" / "stain" / "000.jpg")      # the image's own extension
    _png(cat / "ground_truth" / "stain" / "000_mask.jpg", 255)
    _png(cat / "ground_truth" / "stain" / "000.png", 255)  # both namings: the MVTec one wins
    _png(cat / "test" / "stain" / "001.png")
    _png(cat / "ground_truth" / "stain" / "001_mask.PNG", 255)  # an upper-case extension

    items = {(path.parent.name, path.name): mask for path, _, mask in labelled_test_images(cat)}

    assert items == {
        ("good", "000.png"): None,
        ("crack", "000.png"): cat / "ground_truth" / "crack" / "000_mask.png",
        ("crack", "001.bmp"): cat / "ground_truth" / "crack" / "001.png",
        ("crack", "002.png"): None,
        ("stain", "000.jpg"): cat / "ground_truth" / "stain" / "000_mask.jpg",
        ("stain", "001.png"): cat / "ground_truth" / "stain" / "001_mask.PNG",
    }
    assert [kind for _, kind, _ in labelled_test_images(cat)] == ["crack"] * 3 + ["good"] + ["stain"] * 2


def test_a_folder_without_test_images_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "part" / "train" / "good").mkdir(parents=True)
    with pytest.raises(ImageReadError, match="MVTec-AD-style"):
        labelled_test_images(tmp_path / "part")
    (tmp_path / "part" / "test" / "good").mkdir(parents=True)
    with pytest.raises(ImageReadError, match="no test images"):
        labelled_test_images(tmp_path / "part")


def test_masks_stored_as_0_255_labels_16_bit_or_colour_read_alike(tmp_path: Path) -> None:
    truth = np.zeros((12, 20), bool)
    truth[3:7, 5:15] = True
    labels = truth.astype(np.uint8)
    labels[3:7, 10:15] = 2  # one label per defect (0/1/2): every label is defect
    noisy = truth.astype(np.uint8) * 255
    noisy[0, 0] = 3  # a lossy format's stray values stay background
    stored = {"mvtec.png": truth.astype(np.uint8) * 255, "labels.png": labels, "noisy.png": noisy,
              "deep.png": truth.astype(np.uint16), "deep-full.png": truth.astype(np.uint16) * 65535,
              "colour.png": np.dstack([truth * 0, truth * 0, truth * 200]).astype(np.uint8),
              "rgba.png": np.dstack([truth * 255, truth * 255, truth * 255, np.full(truth.shape, 255)]).astype(np.uint8)}
    for name, pixels in stored.items():
        cv2.imwrite(str(tmp_path / name), pixels)
        assert np.array_equal(read_mask(tmp_path / name), truth), name
        assert read_mask(tmp_path / name, (40, 24)).sum() == 4 * truth.sum(), name  # (width, height), nearest
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((12, 20), np.uint8))
    assert not read_mask(tmp_path / "empty.png").any()
