"""Mixing geometry by value: polygon clipping, placing, covering, MixUp, CutMix, Mosaic."""
import numpy as np
import pytest

from sephnet.data.mixing import (
    Sample,
    clip_polygon,
    cover,
    cutmix,
    cutmix_rectangle,
    mixup,
    mosaic,
    mosaic_layout,
    place,
)


def _area(points):
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_clip_polygon_square_and_triangle():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    clipped = clip_polygon(square, (5, -5, 20, 4))
    assert _area(clipped) == pytest.approx(5 * 4)
    np.testing.assert_allclose([clipped.min(0), clipped.max(0)], [[5, 0], [10, 4]])
    # a right triangle cut by x <= 5 keeps a trapezoid of area 50 - 12.5
    triangle = np.array([[0, 0], [10, 0], [0, 10]], float)
    assert _area(clip_polygon(triangle, (0, 0, 5, 10))) == pytest.approx(37.5)
    assert len(clip_polygon(triangle, (20, 20, 30, 30))) == 0
    np.testing.assert_allclose(_area(clip_polygon(triangle, (-1, -1, 11, 11))), 50)


def test_place_clips_and_shifts_boxes_polygons_and_masks():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:12, 5:25] = 1
    annotations = [
        {"bbox": np.array([5.0, 2.0, 25.0, 12.0]), "category_id": 1,
         "segmentation": [np.array([5, 2, 25, 2, 25, 12, 5, 12], float)]},
        {"bbox": np.array([5.0, 2.0, 25.0, 12.0]), "category_id": 2, "segmentation": mask},
        {"bbox": np.array([0.0, 15.0, 4.0, 19.0]), "category_id": 3},  # outside the window: dropped
    ]
    out = place(annotations, (10, 0, 30, 10), (100, 50), (80, 160))
    assert [a["category_id"] for a in out] == [1, 2]
    np.testing.assert_allclose(out[0]["bbox"], [110, 52, 125, 60])
    points = out[0]["segmentation"][0].reshape(-1, 2)
    np.testing.assert_allclose([points.min(0), points.max(0)], [[110, 52], [125, 60]])
    ys, xs = np.nonzero(out[1]["segmentation"])
    assert out[1]["segmentation"].shape == (80, 160)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (110, 52, 125, 60)


def test_cover_keeps_the_parts_around_the_rectangle():
    box = np.array([0.0, 0.0, 10.0, 10.0])
    polygon = [np.array([0, 0, 10, 0, 10, 10, 0, 10], float)]
    # the right part is covered: what is left is x in [0, 6]
    out = cover([{"bbox": box, "category_id": 1, "segmentation": polygon}], (6, -1, 20, 20), (10, 20))
    pieces = [p.reshape(-1, 2) for p in out[0]["segmentation"]]
    assert sum(_area(p) for p in pieces) == pytest.approx(60)
    # a hole in the middle: the box stays, the polygon loses the hole's area
    out = cover([{"bbox": box, "category_id": 1, "segmentation": polygon}], (3, 3, 7, 7), (10, 20))
    assert sum(_area(p.reshape(-1, 2)) for p in out[0]["segmentation"]) == pytest.approx(100 - 16)
    # box only: the tight box of box minus rectangle
    left = cover([{"bbox": box, "category_id": 1}], (0, 4, 20, 20), (20, 20))
    np.testing.assert_allclose(left[0]["bbox"], [0, 0, 10, 4])
    assert cover([{"bbox": box, "category_id": 1}], (0, 0, 20, 20), (20, 20)) == []


def _sample(h, w, value, box):
    image = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = value
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return Sample(image, [{"bbox": np.array(box, float), "category_id": value, "segmentation": mask}])


def test_mixup_blends_pixels_and_keeps_all_instances():
    a, b = _sample(10, 20, 200, (0, 0, 5, 5)), _sample(16, 12, 100, (6, 10, 12, 16))
    out = mixup(a, b, 0.25)
    assert out.image.shape == (16, 20, 3)
    assert out.image[0, 0, 0] == round(0.25 * 200)  # only a covers (0, 0)
    assert out.image[12, 8, 0] == round(0.75 * 100)
    assert out.image[15, 19, 0] == 0  # neither
    assert [x["category_id"] for x in out.annotations] == [200, 100]
    for annotation in out.annotations:
        assert annotation["segmentation"].shape == (16, 20)


def test_cutmix_rectangle_and_mix():
    assert cutmix_rectangle((100, 200), 0.75, (100, 50)) == (50, 25, 150, 75)  # sides 50 x 100
    assert cutmix_rectangle((100, 200), 0.75, (0, 0)) == (0, 0, 50, 25)  # cut at the border
    a, b = _sample(20, 20, 200, (0, 0, 20, 20)), _sample(20, 20, 100, (0, 0, 20, 20))
    out = cutmix(a, b, (10, 0, 20, 20))
    assert (out.image[:, :10] == 200).all() and (out.image[:, 10:] == 100).all()
    masks = {x["category_id"]: x["segmentation"] for x in out.annotations}
    assert masks[200][:, :10].all() and not masks[200][:, 10:].any()
    assert masks[100][:, 10:].all() and not masks[100][:, :10].any()
    with pytest.raises(ValueError, match="one size"):
        cutmix(a, _sample(10, 20, 1, (0, 0, 2, 2)), (0, 0, 1, 1))


def test_mosaic_layout_and_pixels():
    layout = mosaic_layout((40, 60), (20, 10), [(30, 30)] * 4)
    # top-left sample shows its bottom-right 20 x 10, and so on
    assert layout[0] == ((10, 20, 30, 30), (-10, -20))
    assert layout[1] == ((0, 20, 30, 30), (20, -20))
    assert layout[2] == ((10, 0, 30, 30), (-10, 10))
    assert layout[3] == ((0, 0, 30, 30), (20, 10))
    samples = [_sample(30, 30, 50 * (k + 1), (0, 0, 30, 30)) for k in range(4)]
    out = mosaic(samples, (40, 60), (20, 10))
    assert out.image[0, 0, 0] == 50 and out.image[0, 49, 0] == 100 and out.image[0, 19, 0] == 50
    assert out.image[39, 0, 0] == 150 and out.image[39, 49, 0] == 200 and out.image[39, 50, 0] == 0
    assert (out.image[:, 50:][:10] == 0).all()  # the top-right sample ends at x = 50
    for annotation in out.annotations:
        ys, xs = np.nonzero(annotation["segmentation"])
        np.testing.assert_allclose(annotation["bbox"], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    with pytest.raises(ValueError, match="4 samples"):
        mosaic(samples[:3], (40, 60), (20, 10))
