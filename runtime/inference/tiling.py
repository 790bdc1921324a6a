"""Tiles: a frame n times the encoder's input size, run as n x n encoder-size tiles and stitched back.

The encoder and decoder graphs (ONNX, TensorRT engines, Triton models) have a fixed input size and a
dynamic batch. A product whose photos are much larger than that size (700-1024 px photos of 224 px
engines, where a thin scratch shrinks below a patch) is inspected at n times the size instead: the
frame is resized to (n*H, n*W), cut into n*n tiles of (H, W) that go through the chain as n*n batch
items, and every output is put back together where its tile lay: stage features into an (n*h, n*w)
grid, the decoder's map into an (n*H, n*W) map. Few-shot scoring then reads one larger feature grid
(patch scorers are position-free, so they need nothing else).

Usage::

    tiles = to_tiles(batch, 2)          # (B, 3, 448, 448) -> (4B, 3, 224, 224), tile (row, col) order per image
    stitched = from_tiles(features, 2)  # (4B, C, 28, 28) -> (B, C, 56, 56); (4B, H, W) maps likewise
    tiles_for([img.shape for img in shots], (224, 224))   # what enrolment's "auto" picks: 2 for >= 672 px photos
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lineguard.runtime.bundle import MAX_TILES
from lineguard.runtime.inference.preprocess import resize_to

AUTO_TILES_FROM = 3  # "auto" tiles photos whose short side is at least this many input sizes


def check_tiles(tiles: int) -> int:
    if not 1 <= tiles <= MAX_TILES:
        raise ValueError(f"tiles per side must be 1..{MAX_TILES}, got {tiles}")
    return tiles


def to_tiles(batch: np.ndarray, tiles: int) -> np.ndarray:
    """(B, C, n*H, n*W) -> (B*n*n, C, H, W): each image's tiles row by row, contiguous."""
    b, c, height, width = batch.shape
    if height % tiles or width % tiles:
        raise ValueError(f"a {height}x{width} batch does not split into {tiles}x{tiles} tiles")
    h, w = height // tiles, width // tiles
    split = batch.reshape(b, c, tiles, h, tiles, w).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(split.reshape(b * tiles * tiles, c, h, w))


def from_tiles(outputs: np.ndarray, tiles: int) -> np.ndarray:
    """The inverse of :func:`to_tiles` for (B*n*n, C, h, w) features or (B*n*n, h, w) maps."""
    if tiles == 1:
        return outputs
    if len(outputs) % (tiles * tiles):
        raise ValueError(f"{len(outputs)} outputs are not whole images of {tiles}x{tiles} tiles")
    b = len(outputs) // (tiles * tiles)
    if outputs.ndim == 3:
        _, h, w = outputs.shape
        return np.ascontiguousarray(
            outputs.reshape(b, tiles, tiles, h, w).transpose(0, 1, 3, 2, 4).reshape(b, tiles * h, tiles * w))
    _, c, h, w = outputs.shape
    grid = outputs.reshape(b, tiles, tiles, c, h, w).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(grid.reshape(b, c, tiles * h, tiles * w))


def image_tiles(image: np.ndarray, tiles: int, input_size: tuple[int, int]) -> list[np.ndarray]:
    """A camera image as the n x n images of the input size that its tiles show (row by row, same channel
    layout): what a product's own decoder trains on when the product is inspected as tiles."""
    h, w = input_size
    resized = resize_to(image, (h * tiles, w * tiles))
    return [np.ascontiguousarray(resized[r * h : (r + 1) * h, c * w : (c + 1) * w])
            for r in range(tiles) for c in range(tiles)]


def images_as_tiles(images: Sequence[np.ndarray], tiles: int, input_size: tuple[int, int]) -> list[np.ndarray]:
    """Every image's :func:`image_tiles`, in order (the images themselves when ``tiles`` is 1): what the encoder
    of a product inspected as tiles sees, for what trains or calibrates on it (adapt, INT8)."""
    if check_tiles(tiles) == 1:
        return list(images)
    return [tile for image in images for tile in image_tiles(image, tiles, input_size)]


def tiles_for(image_shapes: Sequence[tuple[int, ...]], input_size: tuple[int, int]) -> int:
    """The tiles per side ``--tiles auto`` chooses for a product from its photos' (H, W[, C]) shapes: 2 where
    the smallest photo's short side is at least :data:`AUTO_TILES_FROM` times the input size (a 700-1024 px
    photo of a 224 px encoder: each tile is still shrunk 1.5x or more, so a thin defect keeps pixels that the
    whole frame squeezed to 224 px loses), else 1. Measured on real photos up to 512 px, tiles ranked no
    better and rejected more good parts (README, Tiles); smaller photos are only enlarged by them."""
    short_side = min(min(shape[:2]) for shape in image_shapes)
    return 2 if short_side >= AUTO_TILES_FROM * min(input_size) else 1


def resolve_tiles(tiles: int | str, images: Sequence[np.ndarray], input_size: tuple[int, int]) -> int:
    """``tiles`` as given ("auto": :func:`tiles_for` the images), checked."""
    return tiles_for([image.shape for image in images], input_size) if tiles == "auto" else check_tiles(int(tiles))
