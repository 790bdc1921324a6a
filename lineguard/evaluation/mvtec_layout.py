"""The test half of an MVTec-AD-style category folder: test images, their defect type, their mask.

Layout::

    C/test/good/*.png                      normal test images
    C/test/<type>/*.png                    anomalous images of defect type <type>
    C/ground_truth/<type>/<stem>_mask.png  optional pixel mask of C/test/<type>/<stem>.*

Datasets laid out "like MVTec" name their masks in a few ways: MVTec AD and MPDD write
``<stem>_mask.png``, BTAD and VisA's MVTec-style split write ``<stem>.png``, and some keep the image's own
extension. :func:`mask_for` takes the first of those that exists, so a category's pixel AUROC is not
silently lost to a naming habit; an image without any is still evaluated (image metrics only). Masks are
0/255 in MVTec AD, but some sets store 0/1 or 16-bit labels: :func:`read_mask` marks what is above half the
mask's own maximum.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.image_io import IMAGE_SUFFIXES, ImageReadError, image_paths, read_image

MASK_SUFFIXES = (".png", *sorted(IMAGE_SUFFIXES - {".png"}))


def mask_for(category_dir: Path, defect_type: str, image: Path) -> Path | None:
    """The ground-truth mask of ``image`` (a file of ``C/test/<defect_type>``), or None where there is none."""
    folder = category_dir / "ground_truth" / defect_type
    for name in (f"{image.stem}_mask", image.stem):
        for suffix in MASK_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_mask(path: Path, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """A ground-truth mask as bool (H, W), resized (nearest) to ``size_wh`` where given: pixels above half the
    mask's maximum (0/255, 0/1 and 16-bit masks alike; colour masks by their brightest channel)."""
    labels = read_image(path, cv2.IMREAD_UNCHANGED)
    if labels.ndim == 3:
        labels = labels.max(axis=2)
    peak = labels.max()
    mask = (labels > peak / 2) if peak > 0 else np.zeros(labels.shape, bool)
    if size_wh is not None and mask.shape[::-1] != size_wh:
        mask = cv2.resize(mask.astype(np.uint8), size_wh, interpolation=cv2.INTER_NEAREST) > 0
    return mask


def labelled_test_images(category_dir: Path) -> list[tuple[Path, str, Path | None]]:
    """(image, defect type, mask or None) for every test image, types in name order ("good" is normal)."""
    test_dir = category_dir / "test"
    if not test_dir.is_dir():
        raise ImageReadError(f"{test_dir} does not exist: expected an MVTec-AD-style category folder")
    items = [(path, type_dir.name, mask_for(category_dir, type_dir.name, path))
             for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir())
             for path in image_paths(type_dir)]
    if not items:
        raise ImageReadError(f"{test_dir} holds no test images")
    return items
