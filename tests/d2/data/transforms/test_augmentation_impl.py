"""Built-in augmentations: ResizeShortestEdge sizes, RandomFlip, RandomCrop, AugmentationList."""
import numpy as np
import pytest

from sephnet.d2.data import transforms as T


@pytest.mark.parametrize(
    "old_hw, short, max_size, expected",
    [
        ((480, 640), 800, 1333, (800, 1067)),  # 640 * 800/480 = 1066.67 -> 1067
        ((640, 480), 800, 1333, (1067, 800)),
        ((100, 1000), 800, 1333, (133, 1333)),  # long side capped: 800 * 1333/8000 = 133.3
        ((50, 50), 20, 1333, (20, 20)),
        ((427, 640), 640, 1333, (640, 959)),  # 640 * 640/427 = 959.25
        ((3, 5), 2, 3, (2, 3)),  # (2, 3.33) -> capped to (1.8, 3) -> int(2.3)=2, int(3.5)=3
    ],
)
def test_resize_shortest_edge_output_shape(old_hw, short, max_size, expected):
    assert T.ResizeShortestEdge.get_output_shape(*old_hw, short, max_size) == expected


def test_choice_sampling_draws_from_the_list_like_numpy():
    aug = T.ResizeShortestEdge([10, 20, 30], 1000, "choice")
    image = np.zeros((40, 60, 3), np.uint8)
    np.random.seed(3)
    reference = [np.random.choice([10, 20, 30]) for _ in range(2)]
    np.random.seed(3)
    drawn = []
    for _ in range(30):
        tfm = aug.get_transform(image)
        drawn.append(tfm.new_h)
        assert tfm.new_w == T.ResizeShortestEdge.get_output_shape(40, 60, tfm.new_h, 1000)[1]
    assert set(drawn) == {10, 20, 30}
    assert drawn[:2] == reference


def test_range_sampling_is_inclusive():
    aug = T.ResizeShortestEdge((10, 12), sample_style="range")
    image = np.zeros((30, 20), np.uint8)
    np.random.seed(0)
    drawn = {aug.get_transform(image).new_w for _ in range(60)}
    assert drawn == {10, 11, 12}
    np.random.seed(0)
    first = np.random.randint(10, 13)
    np.random.seed(0)
    assert aug.get_transform(image).new_w == first


def test_int_short_edge_and_zero_size():
    image = np.zeros((30, 20, 3), np.uint8)
    assert T.ResizeShortestEdge(10).get_transform(image).new_w == 10
    assert isinstance(T.ResizeShortestEdge(0, sample_style="choice").get_transform(image), T.NoOpTransform)


def test_resize_shortest_edge_bad_arguments():
    with pytest.raises(ValueError, match="sample_style"):
        T.ResizeShortestEdge(10, sample_style="uniform")
    with pytest.raises(ValueError, match="range"):
        T.ResizeShortestEdge([1, 2, 3], sample_style="range")


def test_random_flip():
    image = np.zeros((4, 7, 3), np.uint8)
    h = T.RandomFlip(prob=1.0).get_transform(image)
    assert isinstance(h, T.HFlipTransform) and h.width == 7
    v = T.RandomFlip(prob=1.0, horizontal=False, vertical=True).get_transform(image)
    assert isinstance(v, T.VFlipTransform) and v.height == 4
    assert isinstance(T.RandomFlip(prob=0.0).get_transform(image), T.NoOpTransform)
    with pytest.raises(ValueError):
        T.RandomFlip(horizontal=True, vertical=True)
    with pytest.raises(ValueError):
        T.RandomFlip(horizontal=False, vertical=False)


def test_random_flip_probability():
    image = np.zeros((4, 7, 3), np.uint8)
    aug = T.RandomFlip(prob=0.3)
    flips = sum(isinstance(aug.get_transform(image), T.HFlipTransform) for _ in range(2000))
    assert 500 < flips < 700


def test_random_crop_absolute_stays_inside():
    image = np.arange(10 * 12).reshape(10, 12).astype(np.uint8)
    aug = T.RandomCrop("absolute", (4, 5))
    for _ in range(20):
        tfm = aug.get_transform(image)
        assert (tfm.h, tfm.w) == (4, 5)
        assert 0 <= tfm.y0 <= 6 and 0 <= tfm.x0 <= 7
        out = tfm.apply_image(image)
        np.testing.assert_array_equal(out, image[tfm.y0 : tfm.y0 + 4, tfm.x0 : tfm.x0 + 5])
    assert T.RandomCrop("relative", (0.5, 0.25)).get_crop_size((10, 12)) == (5, 3)
    with pytest.raises(ValueError, match="crop_type"):
        T.RandomCrop("weird", (1, 1))


def test_augmentation_list_keeps_boxes_aligned():
    image = np.zeros((10, 20, 3), np.uint8)
    aug_input = T.AugInput(image, boxes=np.array([[2.0, 1.0, 6.0, 5.0]]))
    tfms = T.AugmentationList([T.ResizeShortestEdge(20, sample_style="choice"), T.RandomFlip(prob=1.0)])(aug_input)
    assert aug_input.image.shape == (20, 40, 3)
    # resize x2 -> [4, 2, 12, 10]; flip in width 40 -> [28, 2, 36, 10]
    np.testing.assert_allclose(aug_input.boxes, [[28.0, 2.0, 36.0, 10.0]])
    np.testing.assert_allclose(tfms.apply_box(np.array([[2.0, 1.0, 6.0, 5.0]])), aug_input.boxes)


def test_apply_augmentations_on_array_and_transform_wrapping():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out, tfms = T.apply_augmentations([T.HFlipTransform(3)], image)
    np.testing.assert_array_equal(out, image[:, ::-1])
    assert isinstance(tfms, T.TransformList)
    with pytest.raises(TypeError):
        T.AugmentationList([object()])


def test_aug_input_rejects_bad_images():
    with pytest.raises(TypeError):
        T.AugInput([[1, 2]])
    with pytest.raises(TypeError):
        T.AugInput(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError):
        T.AugInput(np.zeros((2, 2, 2, 2), np.uint8))


def test_repr_lists_non_default_arguments():
    assert repr(T.RandomFlip()) == "RandomFlip()"
    assert repr(T.ResizeShortestEdge([640, 672], 1333, "choice")) == (
        "ResizeShortestEdge(short_edge_length=[640, 672], max_size=1333, sample_style='choice')"
    )


def test_resize_scale_fits_the_scaled_target():
    aug = T.ResizeScale(0.5, 0.5, 100, 200)
    tfm = aug.get_transform(np.zeros((40, 40, 3), np.uint8))
    # target x0.5 = (50, 100); fit a 40x40 image: ratio min(50/40, 100/40) = 1.25
    assert (tfm.new_h, tfm.new_w) == (50, 50)
    sizes = {T.ResizeScale(0.1, 2.0, 64, 64).get_transform(np.zeros((32, 16), np.uint8)).new_h for _ in range(20)}
    assert all(0 < s <= 128 for s in sizes) and len(sizes) > 1


def test_random_apply():
    image = np.zeros((4, 6), np.uint8)
    always = T.RandomApply(T.HFlipTransform(6), prob=1.0)
    assert isinstance(always.get_transform(image), T.HFlipTransform)
    assert isinstance(T.RandomApply(T.RandomFlip(prob=1.0), prob=0.0).get_transform(image), T.NoOpTransform)
    with pytest.raises(ValueError, match="prob"):
        T.RandomApply(T.NoOpTransform(), prob=1.5)
