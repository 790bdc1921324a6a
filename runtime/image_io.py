"""Reading image folders (OpenCV), for enrolment, evaluation and the camera pusher.

Usage::

    paths = image_paths("data/tile/train/good")
    images = read_images(paths)           # uint8 BGR arrays
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class ImageReadError(ValueError):
    """A file or folder does not hold readable images."""


def image_paths(folder: str | os.PathLike[str]) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def choose_shots(paths: list[Path], shots: int, seed: int) -> list[Path]:
    """``shots`` of ``paths`` drawn without replacement by ``seed``, in their original order."""
    if not 1 <= shots <= len(paths):
        folder = paths[0].parent if paths else "the folder"
        raise ImageReadError(f"{shots} shots requested but {folder} has {len(paths)} images")
    return [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), shots, replace=False))]


def split_normals(paths: list[Path], shots: int, seed: int, calib: int | None = None) -> tuple[list[Path], list[Path]]:
    """The K shots drawn by ``seed`` and the calibration normals: all the others, or ``calib`` of them."""
    chosen = choose_shots(paths, shots, seed)
    taken = set(chosen)
    rest = [p for p in paths if p not in taken]
    if calib is not None and calib < len(rest):
        rest = choose_shots(rest, calib, seed + 1) if calib > 0 else []
    return chosen, rest


def read_image(path: str | os.PathLike[str], flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    if not Path(path).is_file():  # before OpenCV, which would also log its own warning to stderr
        raise ImageReadError(f"{path} does not exist" if not Path(path).exists() else f"{path} is not a file")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ImageReadError(f"{path} is not a readable image")
    return image


def read_images(paths: Iterable[Path]) -> list[np.ndarray]:
    return [read_image(p) for p in paths]
