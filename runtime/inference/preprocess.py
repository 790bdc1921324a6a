"""Camera image -> encoder input tensor, exactly as the bundle's manifest prescribes.

Usage::

    pre = Preprocessor(bundle.manifest.preprocessing)
    batch = pre([bgr_frame_1, bgr_frame_2])   # float32 (2, 3, H, W)

Images are uint8 arrays from OpenCV: (H, W, 3) in BGR order by default, (H, W) or (H, W, 1) grayscale.
Nothing guesses the value range: anything but uint8 is refused with :class:`ImageFormatError`.

The frame is resized first, in its own channel layout (resizing works per channel, so it commutes
with the channel swap and the grey-to-RGB copy), and converted at model size; normalisation is one
lookup per channel (uint8 -> float32 table of ``(v - mean) / std``) written straight into the batch,
in the model's channel order: no full-resolution colour conversion, no float copies of the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from lineguard.runtime.bundle import Preprocessing

ChannelOrder = Literal["BGR", "RGB"]


class ImageFormatError(ValueError):
    """The image's dtype or shape cannot be an inspection input."""


def checked(image: np.ndarray) -> np.ndarray:
    """Validate a uint8 camera image; returns it as (H, W) or (H, W, 3|4) without copying."""
    if not isinstance(image, np.ndarray):
        raise ImageFormatError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageFormatError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ImageFormatError(f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageFormatError(f"image {image.shape[:2]} is too small to inspect (min 8x8)")
    return image


def to_rgb(image: np.ndarray, order: ChannelOrder) -> np.ndarray:
    """A checked (H, W) or (H, W, 3|4) image as (H, W, 3) RGB."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if order == "BGR" else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if order == "BGR" else image


def as_three_channel(image: np.ndarray, order: ChannelOrder) -> np.ndarray:
    """Validate a uint8 image and return it as (H, W, 3) in RGB order (at its own size)."""
    return to_rgb(checked(image), order)


def resize_to(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Stretch to (height, width); area interpolation when shrinking (no aliasing), linear when growing."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    shrinking = image.shape[0] * image.shape[1] > h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class Preprocessor:
    """Turns uint8 camera images into the normalised NCHW float32 batch the encoder expects."""

    def __init__(self, spec: Preprocessing) -> None:
        self.spec = spec
        mean = np.asarray(spec.mean, dtype=np.float32)
        inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
        # table[c, v]: RGB channel c of value v, normalised (the same float32 arithmetic as (v - mean) / std)
        self._table = np.stack([(np.arange(256, dtype=np.float32) - mean[c]) * inv_std[c] for c in range(3)])
        # output channel k reads RGB channel _rgb_of[k]
        self._rgb_of = (0, 1, 2) if spec.color_order == "RGB" else (2, 1, 0)

    def size(self, tiles: int = 1) -> tuple[int, int]:
        """(height, width) a frame is inspected at: the input size, times ``tiles`` per side when the
        chain runs it as tiles (lineguard.runtime.inference.tiling)."""
        h, w = self.spec.input_size
        return h * tiles, w * tiles

    def to_model_rgb(self, image: np.ndarray, order: ChannelOrder = "BGR", tiles: int = 1) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the size it is inspected at (:meth:`size`): also what maps are overlaid on.
        Resized first, converted after (at model size)."""
        return to_rgb(resize_to(checked(image), self.size(tiles)), order)

    def normalise_into(self, rgb: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB at input size -> ``out`` (3, H, W) float32, one table lookup per channel."""
        for k, c in enumerate(self._rgb_of):
            np.take(self._table[c], rgb[:, :, c], out=out[k], mode="clip")  # uint8: never out of range
        return out

    def normalise(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB at input size -> (3, H, W) float32."""
        return self.normalise_into(rgb, np.empty((3, *rgb.shape[:2]), np.float32))

    def normalise_batch(self, rgbs: Sequence[np.ndarray]) -> np.ndarray:
        """Model-size RGB images (all of one size) -> the (B, 3, H, W) batch, each written in place (no
        stacking copy)."""
        h, w = rgbs[0].shape[:2] if rgbs else self.spec.input_size
        batch = np.empty((len(rgbs), 3, h, w), np.float32)
        for i, rgb in enumerate(rgbs):
            self.normalise_into(rgb, batch[i])
        return batch

    def __call__(self, images: Sequence[np.ndarray], order: ChannelOrder = "BGR", tiles: int = 1) -> np.ndarray:
        return self.normalise_batch([self.to_model_rgb(img, order, tiles) for img in images])
