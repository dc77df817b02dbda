"""Photometric distortion, random erasing and CutOut by value."""
import cv2
import numpy as np
import pytest

from sephnet.data import CutOut, PhotometricDistortion, RandomErase
from sephnet.data.photometric import distort_colors


def test_distort_colors_steps_by_hand():
    image = np.array([[[10, 100, 200], [30, 60, 90]]], np.float64)  # RGB
    same = distort_colors(image, brightness=0, contrast=1, saturation=1, hue=0, bgr=False)
    np.testing.assert_allclose(same, image, atol=1e-4)
    bright = distort_colors(image, brightness=0.1, contrast=1, saturation=1, hue=0, bgr=False)
    np.testing.assert_allclose(bright, np.clip(image + 25.5, 0, 255), atol=1e-4)
    flat = distort_colors(image, brightness=0, contrast=0, saturation=1, hue=0, bgr=False)
    np.testing.assert_allclose(flat, [[[20, 80, 145], [20, 80, 145]]], atol=1e-4)  # channel means
    grey = distort_colors(image, brightness=0, contrast=1, saturation=0, hue=0, bgr=False)
    luma = image @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey, np.repeat(luma[..., None], 3, -1), atol=1e-3)
    # a third of a turn maps pure red to pure green
    red = np.array([[[255, 0, 0]]], np.uint8)
    green = distort_colors(red, brightness=0, contrast=1, saturation=1, hue=1 / 3, bgr=False)
    assert green.dtype == np.uint8 and green.tolist() == [[[0, 255, 0]]]
    # BGR input: the same change on reversed channels
    bgr = distort_colors(red[..., ::-1], brightness=0, contrast=1, saturation=1, hue=1 / 3, bgr=True)
    assert bgr.tolist() == [[[0, 255, 0]]]
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        distort_colors(np.zeros((2, 2)), brightness=0, contrast=1, saturation=1, hue=0, bgr=False)


def test_photometric_distortion_probability_and_format():
    aug = PhotometricDistortion(0.0, brightness_delta=0.1, contrast_range=(0.8, 1.2),
                                saturation_range=(0.5, 1.5), hue_delta=0.1, image_format="BGR")
    image = np.full((4, 4, 3), 100, np.uint8)
    assert type(aug.get_transform(image)).__name__ == "NoOpTransform"
    aug.prob = 1.0
    out = aug.get_transform(image).apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        PhotometricDistortion(1.0, brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1),
                              hue_delta=0, image_format="L")


def test_random_erase_fills_one_rectangle_of_the_drawn_size():
    image = np.zeros((50, 80, 3), np.uint8)
    aug = RandomErase(1.0, area_range=(0.1, 0.1), aspect_range=(1.0, 1.0))
    out = aug.get_transform(image).apply_image(image)
    changed = out.any(-1)
    ys, xs = np.nonzero(changed)
    side = round(np.sqrt(0.1 * 50 * 80))  # 20
    # noise can be 0 at some pixels, so the changed pixels fill at most the square
    assert ys.max() - ys.min() + 1 <= side and xs.max() - xs.min() + 1 <= side
    assert changed.sum() > 0.9 * side * side
    # too large to fit in 10 tries: unchanged
    huge = RandomErase(1.0, area_range=(1.0, 1.0), aspect_range=(3.0, 3.0))
    assert type(huge.get_transform(image)).__name__ == "NoOpTransform"


def test_cutout_zeroes_squares_cut_at_the_border():
    image = np.full((30, 40, 3), 255, np.uint8)
    np.random.seed(0)
    np.random.rand()
    cx, cy = np.random.randint(40), np.random.randint(30)
    np.random.seed(0)
    out = CutOut(1.0, num_holes=1, size=8).get_transform(image).apply_image(image)
    zero = ~out.any(-1)
    x0, y0 = max(cx - 4, 0), max(cy - 4, 0)
    x1, y1 = min(cx + 4, 40), min(cy + 4, 30)
    assert zero.sum() == (x1 - x0) * (y1 - y0) and zero[y0:y1, x0:x1].all()
    assert (image == 255).all()  # the input is not modified
