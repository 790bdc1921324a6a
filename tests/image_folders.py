"""Test helper: images written into a folder, as the CLI and the export side read normals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def write_normals(folder: Path, images: Sequence[np.ndarray]) -> Path:
    """``folder``/000.png, 001.png, ... (created with its parents); returns ``folder``."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder
