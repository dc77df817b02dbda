"""ResizeTransform: PIL path for uint8, torch path for float, nearest for masks, coords."""
import numpy as np
import pytest
from PIL import Image

from sephnet.d2.data.transforms import ResizeTransform


def test_uint8_nearest_upscale_duplicates_pixels():
    image = np.array([[0, 10], [20, 30]], np.uint8)
    out = ResizeTransform(2, 2, 4, 4, Image.NEAREST).apply_image(image)
    np.testing.assert_array_equal(out, np.kron(image, np.ones((2, 2), np.uint8)))


def test_uint8_bilinear_constant_and_shapes():
    image = np.full((5, 7, 3), 77, np.uint8)
    out = ResizeTransform(5, 7, 9, 3).apply_image(image)
    assert out.shape == (9, 3, 3) and out.dtype == np.uint8
    assert (out == 77).all()
    single = ResizeTransform(5, 7, 10, 14).apply_image(np.full((5, 7, 1), 3, np.uint8))
    assert single.shape == (10, 14, 1)


def test_float_bilinear_matches_half_pixel_formula():
    # 1-row ramp 0, 1, 2, 3 upsampled x2 with align_corners=False: sample points
    # x_src = (x + 0.5) / 2 - 0.5 clamped to [0, 3].
    image = np.tile(np.arange(4, dtype=np.float32), (2, 1))
    out = ResizeTransform(2, 4, 2, 8).apply_image(image)
    x_src = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    np.testing.assert_allclose(out[0], x_src, atol=1e-6)
    color = np.random.rand(3, 4, 2).astype(np.float32)
    assert ResizeTransform(3, 4, 6, 8).apply_image(color).shape == (6, 8, 2)


def test_segmentation_uses_nearest():
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    out = ResizeTransform(2, 2, 4, 4).apply_segmentation(mask)
    assert set(np.unique(out)) == {0, 1}
    np.testing.assert_array_equal(out, np.kron(mask, np.ones((2, 2), np.uint8)))


def test_coords_and_inverse():
    tfm = ResizeTransform(10, 20, 5, 60)
    coords = tfm.apply_coords(np.array([[10.0, 4.0], [20.0, 10.0]]))
    np.testing.assert_allclose(coords, [[30.0, 2.0], [60.0, 5.0]])
    back = tfm.inverse().apply_coords(coords.copy())
    np.testing.assert_allclose(back, [[10.0, 4.0], [20.0, 10.0]])


def test_wrong_input_size_is_an_error():
    with pytest.raises(ValueError, match=r"\(h, w\)=\(10, 20\)"):
        ResizeTransform(10, 20, 5, 5).apply_image(np.zeros((11, 20), np.uint8))
