"""detectron2's extra augmentations in the core: rotation, extent, fixed-size crop, the
category-constrained crop and the colour augmentations, checked by value."""
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from sephnet.d2.data import transforms as T


def _rect_image(h=40, w=60, box=(10, 8, 30, 20)):
    """uint8 (h, w) image with a 255 rectangle at XYXY ``box`` (pixel edges)."""
    image = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


# ----------------------------------------------------------------------------- rotation
def test_rotation_by_90_expands_to_swapped_size_and_maps_corners():
    tfm = T.RotationTransform(20, 30, 90)
    assert (tfm.bound_h, tfm.bound_w) == (30, 20)
    # counter-clockwise by 90 degrees: the top-right corner (30, 0) becomes the top-left
    corners = np.array([[0.0, 0.0], [30.0, 0.0], [30.0, 20.0], [0.0, 20.0]])
    np.testing.assert_allclose(tfm.apply_coords(corners), [[0, 30], [0, 0], [20, 0], [20, 30]], atol=1e-9)


def test_rotation_moves_box_and_mask_consistently():
    box = (10, 8, 30, 20)
    mask = _rect_image(box=box)
    for angle in (90, 180, 270):
        tfm = T.RotationTransform(40, 60, angle)
        rotated = tfm.apply_segmentation(mask)
        assert rotated.shape == (tfm.bound_h, tfm.bound_w)
        # right angles map pixels onto pixels: the mask's tight box is the moved box
        np.testing.assert_allclose(_tight_box(rotated), tfm.apply_box(np.array([box], float))[0], atol=1e-6)
        assert rotated.sum() == mask.sum()


def test_rotation_by_small_angle_box_holds_the_rotated_rectangle():
    box = np.array([[20.0, 12.0, 40.0, 28.0]])
    tfm = T.RotationTransform(40, 60, 30)
    rotated = tfm.apply_segmentation(_rect_image(box=(20, 12, 40, 28)))
    # apply_box = box of the 4 rotated corners; for a rectangular mask that is its tight
    # box up to the pixel grid
    np.testing.assert_allclose(_tight_box(rotated), tfm.apply_box(box)[0], atol=1.0)
    # the corner formula: width = w cos + h sin
    out = tfm.apply_box(box)[0]
    assert out[2] - out[0] == pytest.approx(20 * np.cos(np.pi / 6) + 16 * np.sin(np.pi / 6))


def test_rotation_without_expand_keeps_size_and_turns_about_center():
    tfm = T.RotationTransform(40, 60, 45, expand=False, center=(10, 5))
    assert (tfm.bound_h, tfm.bound_w) == (40, 60)
    np.testing.assert_allclose(tfm.apply_coords(np.array([[10.0, 5.0]])), [[10.0, 5.0]])
    assert tfm.apply_image(np.full((40, 60), 7, np.uint8)).shape == (40, 60)
    with pytest.raises(NotImplementedError):
        tfm.inverse()


def test_rotation_inverse_restores_coordinates_and_zero_angle_is_identity():
    points = np.array([[3.0, 4.0], [25.0, 17.0]])
    exact = T.RotationTransform(20, 30, 90)
    np.testing.assert_allclose(exact.inverse().apply_coords(exact.apply_coords(points.copy())), points, atol=1e-9)
    # other angles: the inverse crops the middle at an integer offset, so points come
    # back within half a pixel (detectron2 gives the same (+0.5, +0.5) for these)
    tfm = T.RotationTransform(20, 30, 37)
    back = tfm.inverse().apply_coords(tfm.apply_coords(points.copy()))
    np.testing.assert_allclose(back, points + 0.5, atol=1e-9)
    image = np.arange(600, dtype=np.uint8).reshape(20, 30)
    assert T.RotationTransform(20, 30, 360).apply_image(image) is image


def test_random_rotation_samples_and_skips_multiples_of_360():
    image = np.zeros((10, 20), np.uint8)
    np.random.seed(0)
    angles = [T.RandomRotation([-10, 10]).get_transform(image).angle for _ in range(20)]
    assert all(-10 <= a <= 10 for a in angles) and len(set(angles)) == 20
    assert isinstance(T.RandomRotation(720).get_transform(image), T.NoOpTransform)
    choice = T.RandomRotation([90, 180], sample_style="choice")
    assert {choice.get_transform(image).angle for _ in range(30)} == {90, 180}
    tfm = T.RandomRotation(30, expand=False, center=[[0.5, 0.5], [0.5, 0.5]]).get_transform(image)
    np.testing.assert_allclose(tfm.center, [10.0, 5.0])
    with pytest.raises(ValueError, match="sample_style"):
        T.RandomRotation(10, sample_style="uniform")


# ----------------------------------------------------------------------------- extent
def test_extent_transform_pixels_and_coords():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    # the right half of the image, kept at 4x2
    tfm = T.ExtentTransform(src_rect=(2, 0, 4, 4), output_size=(4, 2), interp=Image.NEAREST)
    np.testing.assert_array_equal(tfm.apply_image(image), image[:, 2:])
    np.testing.assert_allclose(tfm.apply_coords(np.array([[2.0, 0.0], [4.0, 4.0]])), [[0, 0], [2, 4]])
    # a rectangle reaching outside is filled with 0 there
    outside = T.ExtentTransform(src_rect=(-4, 0, 4, 4), output_size=(4, 8), interp=Image.NEAREST)
    out = outside.apply_image(image)
    assert (out[:, :4] == 0).all() and (out[:, 4:] == image).all()


def test_random_extent_rectangle_follows_scale_and_shift():
    image = np.zeros((20, 40, 3), np.uint8)
    tfm = T.RandomExtent(scale_range=(0.5, 0.5), shift_range=(0, 0)).get_transform(image)
    np.testing.assert_allclose(tfm.src_rect, (10, 5, 30, 15))
    assert tfm.output_size == (10, 20)
    np.random.seed(1)
    for _ in range(10):
        tfm = T.RandomExtent((1.0, 1.0), (1.0, 1.0)).get_transform(image)
        x0, y0, x1, y1 = tfm.src_rect
        assert (x1 - x0, y1 - y0) == pytest.approx((40, 20)) and abs(x0) <= 20 and abs(y0) <= 10


# ----------------------------------------------------------------------------- crops
def test_fixed_size_crop_crops_large_and_pads_small_images():
    np.random.seed(0)
    big = np.random.randint(0, 255, (50, 70, 3)).astype(np.uint8)
    tfm = T.FixedSizeCrop((30, 40)).get_transform(big)
    crop = tfm.transforms[0]
    assert 0 <= crop.x0 <= 30 and 0 <= crop.y0 <= 20
    # one uniform draw shared by both sides: the offsets are the same fraction of the slack
    assert abs(crop.x0 / 30 - crop.y0 / 20) <= 0.5 / 20 + 0.5 / 30
    out = tfm.apply_image(big)
    np.testing.assert_array_equal(out, big[crop.y0 : crop.y0 + 30, crop.x0 : crop.x0 + 40])
    small = np.full((10, 20, 3), 9, np.uint8)
    padded = T.FixedSizeCrop((30, 40), pad_value=128).get_transform(small).apply_image(small)
    assert padded.shape == (30, 40, 3)
    assert (padded[:10, :20] == 9).all() and (padded[10:] == 128).all() and (padded[:, 20:] == 128).all()
    unpadded = T.FixedSizeCrop((30, 40), pad=False).get_transform(small).apply_image(small)
    assert unpadded.shape == (10, 20, 3)


def test_fixed_size_crop_moves_boxes_and_masks_alike():
    box = (30, 20, 60, 45)
    mask = _rect_image(h=50, w=70, box=box)
    np.random.seed(3)
    tfm = T.FixedSizeCrop((40, 50)).get_transform(mask)
    moved_box = np.clip(tfm.apply_box(np.array([box], float))[0], 0, [50, 40, 50, 40])
    np.testing.assert_allclose(_tight_box(tfm.apply_segmentation(mask)), moved_box)


@pytest.mark.parametrize(
    "crop_type, crop_size, check",
    [
        ("relative", (0.5, 0.25), lambda h, w: (h, w) == (20, 15)),
        ("relative_range", (0.5, 0.25), lambda h, w: 20 <= h <= 40 and 15 <= w <= 60),
        ("absolute", (25, 100), lambda h, w: (h, w) == (25, 60)),
        ("absolute_range", (10, 30), lambda h, w: 10 <= h <= 30 and 10 <= w <= 30),
    ],
)
def test_random_crop_sizes_for_every_crop_type(crop_type, crop_size, check):
    aug = T.RandomCrop(crop_type, crop_size)
    image = np.zeros((40, 60), np.uint8)
    for _ in range(10):
        tfm = aug.get_transform(image)
        assert check(tfm.h, tfm.w)
        assert tfm.x0 + tfm.w <= 60 and tfm.y0 + tfm.h <= 40


def test_category_area_constraint_avoids_single_category_windows():
    sem_seg = np.zeros((40, 40), np.uint8)
    sem_seg[:, 30:] = 1  # label 1 only in the right quarter
    image = np.zeros((40, 40, 3), np.uint8)
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), single_category_max_area=0.9)
    np.random.seed(0)
    for _ in range(10):
        tfm = aug.get_transform(image, sem_seg)
        window = sem_seg[tfm.y0 : tfm.y0 + 20, tfm.x0 : tfm.x0 + 20]
        # 11 of 21 offsets see both labels: 10 tries almost always find one
        assert 0 < window.mean() < 0.9
    # the ignored label does not count: only label 0 remains, so no window qualifies and
    # the last draw is used (a window inside the image still)
    ignoring = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), 0.9, ignored_category=1)
    tfm = ignoring.get_transform(image, sem_seg)
    assert (tfm.w, tfm.h) == (20, 20)
    # without a constraint it is RandomCrop, and AugInput passes sem_seg to it
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20))(aug_input)
    assert aug_input.sem_seg.shape == (20, 20)


# ----------------------------------------------------------------------------- colour
def test_brightness_contrast_saturation_blend_formulas():
    image = np.array([[[10.0, 100.0, 200.0], [50.0, 50.0, 50.0]]])
    np.random.seed(0)
    w = np.random.uniform(0.5, 1.5)
    np.random.seed(0)
    np.testing.assert_allclose(T.RandomBrightness(0.5, 1.5).get_transform(image).apply_image(image), w * image)
    np.random.seed(0)
    contrast = T.RandomContrast(0.5, 1.5).get_transform(image).apply_image(image)
    np.testing.assert_allclose(contrast, w * image + (1 - w) * image.mean())
    np.random.seed(0)
    saturated = T.RandomSaturation(0.5, 1.5).get_transform(image).apply_image(image)
    grey = (image * [0.299, 0.587, 0.114]).sum(-1, keepdims=True)
    np.testing.assert_allclose(saturated, w * image + (1 - w) * grey)
    # a grey pixel stays grey whatever the saturation
    np.testing.assert_allclose(saturated[0, 1], [50.0, 50.0, 50.0])
    with pytest.raises(ValueError, match="RGB"):
        T.RandomSaturation(0.5, 1.5).get_transform(np.zeros((2, 2, 1)))


def test_uint8_blend_is_clipped_and_stays_uint8():
    image = np.array([[[200, 10, 0]]], np.uint8)
    out = T.RandomBrightness(2.0, 2.0).get_transform(image).apply_image(image)
    assert out.dtype == np.uint8 and out.tolist() == [[[255, 20, 0]]]


def test_lighting_adds_pca_shift_to_every_pixel():
    image = np.full((2, 3, 3), 100.0)
    aug = T.RandomLighting(0.1)
    np.random.seed(5)
    weights = np.random.normal(scale=0.1, size=3)
    np.random.seed(5)
    out = aug.get_transform(image).apply_image(image)
    shift = aug.eigen_vecs @ (weights * aug.eigen_vals)
    np.testing.assert_allclose(out, image + shift)
    assert not np.allclose(shift, 0)


def test_color_transforms_leave_geometry_alone():
    image = np.random.RandomState(0).randint(0, 255, (5, 6, 3)).astype(np.uint8)
    tfm = T.ColorTransform(lambda x: 255 - x)
    np.testing.assert_array_equal(tfm.apply_image(image), 255 - image)
    coords = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(tfm.apply_coords(coords), coords)
    seg = np.eye(3, dtype=np.uint8)
    np.testing.assert_array_equal(tfm.apply_segmentation(seg), seg)
    assert isinstance(tfm.inverse(), T.NoOpTransform)
    pil = T.PILColorTransform(lambda im: ImageEnhance.Brightness(im).enhance(0.0))
    assert (pil.apply_image(image) == 0).all()
    with pytest.raises(ValueError, match="callable"):
        T.ColorTransform(3)


# ----------------------------------------------------------------------------- rotated boxes
def test_rotated_boxes_follow_flip_and_resize():
    boxes = np.array([[30.0, 10.0, 8.0, 4.0, 30.0]])
    flipped = T.HFlipTransform(100).apply_rotated_box(boxes.copy())
    np.testing.assert_allclose(flipped, [[70.0, 10.0, 8.0, 4.0, -30.0]])
    # equal scaling: centre and sides scale, the angle stays
    doubled = T.ResizeTransform(50, 100, 100, 200).apply_rotated_box(boxes.copy())
    np.testing.assert_allclose(doubled, [[60.0, 20.0, 16.0, 8.0, 30.0]])
    # x doubled only: an axis-aligned box stretches its width; a 90-degree box its height
    stretch = T.ResizeTransform(50, 100, 50, 200)
    np.testing.assert_allclose(stretch.apply_rotated_box(np.array([[10.0, 5, 8, 4, 0]])), [[20, 5, 16, 4, 0]])
    np.testing.assert_allclose(stretch.apply_rotated_box(np.array([[10.0, 5, 8, 4, 90]])), [[20, 5, 8, 8, 90]])
    # 45 degrees: both axes become (2, 1)/sqrt(2)-like; the angle turns towards x
    out = stretch.apply_rotated_box(np.array([[0.0, 0, 2, 2, 45]]))[0]
    np.testing.assert_allclose(out[2:4], [2 * np.sqrt(2.5), 2 * np.sqrt(2.5)])
    np.testing.assert_allclose(out[4], np.degrees(np.arctan2(2, 1)))


def test_random_apply_bad_probability_is_an_assertion_and_value_error():
    for prob in (-0.01, 1.01):
        with pytest.raises(AssertionError):
            T.RandomApply(T.NoOpTransform(), prob=prob)
        with pytest.raises(ValueError, match="prob"):
            T.RandomApply(T.NoOpTransform(), prob=prob)


def test_resize_shortest_edge_output_shape_is_scriptable():
    import torch

    @torch.jit.script
    def output_shape(h: int, w: int):
        return T.ResizeShortestEdge.get_output_shape(h, w, 80, 133)

    assert output_shape(100, 200) == (67, 133)
