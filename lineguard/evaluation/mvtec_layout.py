"""The test half of an MVTec-AD-style category folder: test images, their defect type, their mask.

Layout::

    C/test/good/*.png                      normal test images
    C/test/<type>/*.png                    anomalous images of defect type <type>
    C/ground_truth/<type>/<stem>_mask.png  optional pixel mask of C/test/<type>/<stem>.*

Data sets laid out "like MVTec" name their masks in more than one way: MVTec AD and MPDD write
``<stem>_mask.png``, VisA's MVTec-style split writes ``<stem>.png``, and some keep another image format.
:func:`masks_by_stem` finds each test image's mask under either name and any image extension (PNG
first), so a category's pixel AUROC is not silently lost to a naming habit; an image without a mask is
still evaluated (image metrics only).

Masks are 0/255 in MVTec AD, but some sets store labels 0/1 (or 0/1/2: one per defect) or 16 bits:
:func:`read_mask` marks what is above half the pixel type's range where the mask reaches it, else
everything above 0.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.image_io import ImageReadError, image_paths, read_image

MASK_SUFFIX = "_mask"


def masks_by_stem(mask_folder: Path) -> dict[str, Path]:
    """Test-image stem -> its mask among the images of ``mask_folder`` (``ground_truth/<type>``): ``<stem>_mask``
    before ``<stem>``, PNG before other formats; {} where the folder does not exist."""
    if not mask_folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    # later entries win: plain <stem> names first, then <stem>_mask; within each, other formats before PNG
    for path in sorted(image_paths(mask_folder),
                       key=lambda p: (p.stem.endswith(MASK_SUFFIX), p.suffix.lower() == ".png", p.name)):
        found[path.stem.removesuffix(MASK_SUFFIX)] = path
    return found


def read_mask(path: Path, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """A ground-truth mask as bool (H, W), resized (nearest) to ``size_wh`` where given. Colour masks count by
    their brightest channel (an alpha channel is dropped); a mask that reaches past half its pixel type's range
    (MVTec's 0/255, 16-bit 0/65535) marks what is past it, a label mask (0/1, 0/1/2) everything above 0."""
    labels = read_image(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if labels.ndim == 3:
        labels = labels.max(axis=2)
    half = np.iinfo(labels.dtype).max // 2 if np.issubdtype(labels.dtype, np.integer) else 0.5
    mask = labels > (half if labels.max() > half else 0)
    if size_wh is not None and mask.shape[::-1] != size_wh:
        mask = cv2.resize(mask.astype(np.uint8), size_wh, interpolation=cv2.INTER_NEAREST) > 0
    return mask


def labelled_test_images(category_dir: Path) -> list[tuple[Path, str, Path | None]]:
    """(image, defect type, its mask or None) for every test image, types in name order ("good" is normal)."""
    test_dir = category_dir / "test"
    if not test_dir.is_dir():
        raise ImageReadError(f"{test_dir} does not exist: expected an MVTec-AD-style category folder")
    items: list[tuple[Path, str, Path | None]] = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        masks = masks_by_stem(category_dir / "ground_truth" / type_dir.name)
        items += [(path, type_dir.name, masks.get(path.stem)) for path in image_paths(type_dir)]
    if not items:
        raise ImageReadError(f"{test_dir} holds no test images")
    return items
