"""Camera image -> encoder input tensor, exactly as the bundle's manifest prescribes.

Usage::

    pre = Preprocessor(bundle.manifest.preprocessing)
    batch = pre([bgr_frame_1, bgr_frame_2])   # float32 (2, 3, H, W)

Images are uint8 arrays from OpenCV: (H, W, 3) in BGR order by default, (H, W) or (H, W, 1) grayscale.
Nothing guesses the value range: anything but uint8 is refused with :class:`ImageFormatError`.
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


def as_three_channel(image: np.ndarray, order: ChannelOrder) -> np.ndarray:
    """Validate a uint8 image and return it as (H, W, 3) in RGB order."""
    if not isinstance(image, np.ndarray):
        raise ImageFormatError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageFormatError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        if order == "BGR":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if order == "BGR" else cv2.COLOR_RGBA2RGB)
    else:
        raise ImageFormatError(f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageFormatError(f"image {image.shape[:2]} is too small to inspect (min 8x8)")
    return image


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
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, 3)
        self._inv_std = (1.0 / np.asarray(spec.std, dtype=np.float32)).reshape(1, 1, 3)

    def to_model_rgb(self, image: np.ndarray, order: ChannelOrder = "BGR") -> np.ndarray:
        """uint8 (H, W, 3) RGB at the model's input size: also what maps are overlaid on."""
        return resize_to(as_three_channel(image, order), self.spec.input_size)

    def normalise(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB at input size -> (3, H, W) float32."""
        x = (rgb.astype(np.float32) - self._mean) * self._inv_std
        if self.spec.color_order == "BGR":
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, images: Sequence[np.ndarray], order: ChannelOrder = "BGR") -> np.ndarray:
        return np.stack([self.normalise(self.to_model_rgb(img, order)) for img in images])
