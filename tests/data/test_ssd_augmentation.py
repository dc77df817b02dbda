"""SSD's augmentation: expand, min-IoU crop, and the mapper's keep/drop of boxes by centre."""
import cv2
import numpy as np
import pytest

from sephnet.backend import BoxMode
from sephnet.backend import transforms as T
from sephnet.data.ssd_augmentation import (
    ExpandTransform,
    MinIoURandomCrop,
    RandomExpand,
    box_iou_with_patch,
    centres_inside,
)
from sephnet.data.ssd_mapper import SSDDatasetMapper


def test_expand_places_the_image_on_a_mean_filled_canvas():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = ExpandTransform(out_h=5, out_w=6, left=1, top=2, fill=(10.4, 20.6, 30.0))
    out = t.apply_image(image)
    assert out.shape == (5, 6, 3)
    np.testing.assert_array_equal(out[2:4, 1:4], image)
    assert out[0, 0].tolist() == [10, 21, 30] and out[4, 5].tolist() == [10, 21, 30]
    assert t.apply_box(np.array([[0.0, 0.0, 3.0, 2.0]])).tolist() == [[1.0, 2.0, 4.0, 4.0]]


def test_random_expand_draws_a_canvas_up_to_max_ratio():
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    np.random.seed(3)
    sizes = []
    for _ in range(20):
        t = RandomExpand(1.0, 3.0, fill=(0, 0, 0)).get_transform(image)
        assert isinstance(t, ExpandTransform)
        assert t.left + 20 <= t.out_w and t.top + 10 <= t.out_h
        sizes.append(t.out_w / 20)
    assert 1.0 <= min(sizes) and max(sizes) <= 3.0 and max(sizes) > 1.5
    assert isinstance(RandomExpand(0.0, 3.0, fill=(0, 0, 0)).get_transform(image), T.NoOpTransform)


def test_iou_and_centre_helpers_by_hand():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 0.0, 30.0, 2.0]])
    patch = (0, 0, 10, 10)
    assert box_iou_with_patch(boxes, patch).tolist() == pytest.approx([1.0, 25 / 175, 0.0])
    # centres (5, 5) inside; (10, 10) on the border (not strictly inside); (25, 1) outside
    assert centres_inside(boxes, patch).tolist() == [True, False, False]


@pytest.mark.parametrize("seed", range(5))
def test_crop_patch_meets_the_minimum_iou(seed):
    np.random.seed(seed)
    boxes = np.array([[30.0, 30.0, 70.0, 70.0], [40.0, 35.0, 80.0, 75.0]])
    crop = MinIoURandomCrop(min_size=0.3)
    patch = crop._try_patches(100, 100, boxes, 0.3)
    assert patch is not None
    x0, y0, x1, y1 = patch
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100
    assert box_iou_with_patch(boxes, patch).min() >= 0.3
    assert centres_inside(boxes, patch).any()
    assert 0.5 <= (y1 - y0 + 1) / (x1 - x0) and (y1 - y0) / (x1 - x0 + 1) <= 2.0


def test_crop_gives_up_when_no_patch_can_meet_the_iou():
    np.random.seed(0)
    # two small boxes at opposite corners: no patch has IoU >= 0.5 with both
    boxes = np.array([[0.0, 0.0, 5.0, 5.0], [95.0, 95.0, 100.0, 100.0]])
    assert MinIoURandomCrop()._try_patches(100, 100, boxes, 0.5) is None


def test_crop_returns_a_crop_or_the_whole_image():
    np.random.seed(1)
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[30.0, 30.0, 70.0, 70.0]])
    kinds = {type(MinIoURandomCrop().get_transform(image, boxes)).__name__ for _ in range(40)}
    assert kinds == {"CropTransform", "NoOpTransform"}


def _write_image(tmp_path, height=40, width=60):
    image = np.full((height, width, 3), 100, dtype=np.uint8)
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, image)
    return path


def test_mapper_keeps_boxes_whose_centre_is_inside_the_crop(tmp_path):
    """A fixed crop x 10-40, y 0-30 (then resize to 60 x 60: x2 in both axes):
    box A (centre inside, sticks out) is kept and clipped; box B (centre outside, partly
    inside) is dropped; box C (inside) is kept; the crowd box is dropped."""
    record = {
        "file_name": _write_image(tmp_path),
        "height": 40,
        "width": 60,
        "image_id": 7,
        "annotations": [
            {"bbox": [5.0, 5.0, 20.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0},
            {"bbox": [35.0, 20.0, 55.0, 38.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 2, "iscrowd": 0},
            {"bbox": [15.0, 12.0, 25.0, 22.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0},
            {"bbox": [15.0, 12.0, 25.0, 22.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1},
        ],
    }
    mapper = SSDDatasetMapper(
        augmentations=[T.CropTransform(10, 0, 30, 30), T.Resize((60, 60))], image_format="BGR"
    )
    out = mapper(record)
    assert tuple(out["image"].shape) == (3, 60, 60)
    assert out["image_id"] == 7 and "annotations" not in out and "annotations" in record
    instances = out["instances"]
    # A: (5, 5, 25, 15) -> crop (-5, 5, 15, 15) -> x2 (-10, 10, 30, 30) -> clipped x0 = 0
    assert instances.gt_boxes.tensor.tolist() == [[0.0, 10.0, 30.0, 30.0], [10.0, 24.0, 30.0, 44.0]]
    assert instances.gt_classes.tolist() == [1, 0]


def test_mapper_from_config_builds_the_pipeline(sephnet_cfg, tmp_path):
    cfg = sephnet_cfg(
        {
            "MODEL.SEPH.SSD.AUGMENT.ENABLED": "True",
            "MODEL.SEPH.SSD.INPUT_SIZE": "32",
            "MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB": "0.5",
            "MODEL.MASK_ON": "False",
        },
        validate=True,
    )
    mapper = SSDDatasetMapper(cfg)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names == ["PhotometricDistortion", "RandomExpand", "MinIoURandomCrop", "Resize", "RandomFlip"]
    record = {
        "file_name": _write_image(tmp_path),
        "height": 40,
        "width": 60,
        "annotations": [{"bbox": [10.0, 10.0, 50.0, 30.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}],
    }
    for seed in range(5):
        np.random.seed(seed)
        out = mapper(record)
        assert tuple(out["image"].shape) == (3, 32, 32)
        boxes = out["instances"].gt_boxes.tensor
        assert ((boxes >= 0) & (boxes <= 32)).all()
