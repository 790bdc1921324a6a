"""Preprocessing is read from the manifest and refuses what it cannot interpret."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.runtime.bundle import Preprocessing
from lineguard.runtime.inference.preprocess import ImageFormatError, Preprocessor

SPEC = Preprocessing(input_size=(32, 48), color_order="RGB", mean=(127, 127, 127), std=(128, 128, 128))


def test_bgr_is_converted_to_rgb() -> None:
    image = np.zeros((64, 96, 3), np.uint8)
    image[..., 0] = 255  # blue in OpenCV order
    x = Preprocessor(SPEC)([image])
    assert x.shape == (1, 3, 32, 48) and x.dtype == np.float32
    assert x[0, 2].mean() == pytest.approx(1.0) and x[0, 0].mean() == pytest.approx(-127 / 128)
    rgb = Preprocessor(SPEC)([image], order="RGB")
    assert rgb[0, 0].mean() == pytest.approx(1.0)


def test_gray_and_alpha_inputs() -> None:
    pre = Preprocessor(SPEC)
    assert pre([np.full((40, 40), 127, np.uint8)]).std() == 0
    assert pre([np.zeros((40, 40, 4), np.uint8)]).shape == (1, 3, 32, 48)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((40, 40, 3), np.float32), "uint8"),
        (np.zeros((40, 40, 2), np.uint8), "expected"),
        (np.zeros((4, 4, 3), np.uint8), "too small"),
        ("not an image", "numpy array"),
    ],
)
def test_bad_images_are_refused(image, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        Preprocessor(SPEC)([image])


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
@pytest.mark.parametrize("shape", [(480, 640, 3), (37, 53, 3), (300, 200), (120, 90, 1), (64, 80, 4), (16, 24, 3)])
def test_resize_first_and_fused_normalisation_match_the_old_path(shape: tuple[int, ...], color_order: str) -> None:
    """Resizing before the colour conversion and one table lookup per channel give the same numbers,
    bit for bit, as converting at full resolution and normalising with float copies (the old path)."""
    from lineguard.bench.preprocess import reference_preprocess

    spec = Preprocessing(input_size=(32, 48), color_order=color_order, mean=(123.7, 116.3, 103.5),
                         std=(58.4, 57.1, 57.4))
    rng = np.random.default_rng(sum(shape))
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    pre = Preprocessor(spec)
    for order in ("BGR", "RGB"):
        got = pre(images, order=order)
        assert got.flags.c_contiguous and got.dtype == np.float32
        np.testing.assert_array_equal(got, reference_preprocess(spec, images, order=order))
    rgbs = [pre.to_model_rgb(img) for img in images]
    np.testing.assert_array_equal(pre.normalise_batch(rgbs), np.stack([pre.normalise(r) for r in rgbs]))
