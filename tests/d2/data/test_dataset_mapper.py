"""DatasetMapper keeps image, boxes and masks aligned through flip and resize."""
import copy
import os

import cv2
import numpy as np
import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.data import transforms as T
from sephnet.d2.data.dataset_mapper import DatasetMapper
from sephnet.d2.data.detection_utils import SizeMismatchError
from sephnet.d2.structures import BitMasks, BoxMode, PolygonMasks

H, W = 20, 30
X0, Y0, X1, Y1 = 4, 6, 12, 16  # the white rectangle, pixel-edge coordinates


@pytest.fixture
def record(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    image[Y0:Y1, X0:X1] = 255
    path = os.path.join(str(tmp_path), "rect.png")
    cv2.imwrite(path, image)
    return {
        "file_name": path,
        "height": H,
        "width": W,
        "image_id": 1,
        "annotations": [
            {"bbox": [X0, Y0, X1 - X0, Y1 - Y0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1,
             "iscrowd": 0, "segmentation": [[X0, Y0, X1, Y0, X1, Y1, X0, Y1]]},
            {"bbox": [0, 0, 3, 3], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1,
             "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]]},
        ],
    }


def _box_of(mask: torch.Tensor):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_flip_and_resize_keep_box_mask_and_pixels_aligned(record):
    original = copy.deepcopy(record)
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.ResizeShortestEdge(40, 1000, "choice"), T.RandomFlip(prob=1.0)],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
    )
    out = mapper(record)
    assert record == original  # the input dict is untouched

    image = out["image"]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 40, 60)
    inst = out["instances"]
    assert len(inst) == 1  # the crowd annotation is dropped
    assert inst.gt_classes.tolist() == [1]
    # x2 then flip in width 60: x' = 60 - 2x
    expected_box = [60 - 2 * X1, 2 * Y0, 60 - 2 * X0, 2 * Y1]
    assert inst.gt_boxes.tensor[0].tolist() == pytest.approx(expected_box)
    assert isinstance(inst.gt_masks, BitMasks)
    mask = inst.gt_masks.tensor[0]
    assert _box_of(mask) == expected_box
    white = image[0] > 128
    assert _box_of(white) == expected_box
    # the mask covers the white pixels away from the resampled border
    inner = torch.zeros_like(white)
    inner[2 * Y0 + 1 : 2 * Y1 - 1, 60 - 2 * X1 + 1 : 60 - 2 * X0 - 1] = True
    assert (white & inner).sum() == inner.sum() and (mask & inner).sum() == inner.sum()
    assert "annotations" not in out and out["height"] == H and out["width"] == W


def test_polygon_masks_follow_the_transform(record):
    mapper = DatasetMapper(
        is_train=True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", use_instance_mask=True
    )
    inst = mapper(record)["instances"]
    assert isinstance(inst.gt_masks, PolygonMasks)
    poly = inst.gt_masks.polygons[0][0]
    np.testing.assert_allclose(poly, [W - X0, Y0, W - X1, Y0, W - X1, Y1, W - X0, Y1])


def test_without_masks_segmentation_is_dropped(record):
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    inst = mapper(record)["instances"]
    assert not inst.has("gt_masks")
    assert inst.gt_boxes.tensor[0].tolist() == [X0, Y0, X1, Y1]


def test_eval_mode_drops_annotations(record):
    mapper = DatasetMapper(is_train=False, augmentations=[T.ResizeShortestEdge(10, 1000, "choice")], image_format="BGR")
    out = mapper(record)
    assert "annotations" not in out and "instances" not in out
    assert tuple(out["image"].shape) == (3, 10, 15)


def test_size_mismatch_names_the_file(record):
    record["width"] = 31
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    with pytest.raises(SizeMismatchError, match="rect.png"):
        mapper(record)


def test_missing_image_names_the_file(record):
    record["file_name"] = record["file_name"].replace("rect.png", "gone.png")
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        mapper(record)


def test_from_config():
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"
    mapper = DatasetMapper(cfg, is_train=True)
    assert mapper.is_train and mapper.image_format == "BGR"
    assert mapper.use_instance_mask and mapper.instance_mask_format == "bitmask"
    assert not mapper.recompute_boxes and mapper.proposal_topk is None
    assert [type(a) for a in mapper.augmentations.augs] == [T.ResizeShortestEdge, T.RandomFlip]

    cfg.INPUT.CROP.ENABLED = True
    cropping = DatasetMapper(cfg, True)
    assert isinstance(cropping.augmentations.augs[0], T.RandomCrop) and cropping.recompute_boxes
    assert not DatasetMapper(cfg, False).recompute_boxes

    cfg.MODEL.KEYPOINT_ON = True
    with pytest.raises(ValueError, match="keypoint"):
        DatasetMapper(cfg, True)


def test_recompute_boxes_requires_masks():
    with pytest.raises(ValueError, match="recompute_boxes"):
        DatasetMapper(is_train=True, augmentations=[], image_format="BGR", recompute_boxes=True)


@pytest.mark.parametrize(
    "crop_type, crop_size",
    [("relative", [0.5, 0.5]), ("relative_range", [0.3, 0.3]), ("absolute", [12, 14]), ("absolute_range", [8, 16])],
)
def test_input_crop_of_every_type_keeps_boxes_on_the_cropped_masks(record, crop_type, crop_size):
    """INPUT.CROP.*: the crop runs first and, with masks, the boxes become the cropped masks'
    tight boxes (RLE masks, so no polygon clipping library is needed)."""
    import pycocotools.mask as mask_util

    # an L-shaped object: its box shrinks differently from its mask when cut
    full = np.zeros((H, W), np.uint8, order="F")
    full[Y0:Y1, X0 : X0 + 3] = 1
    full[Y1 - 3 : Y1, X0:X1] = 1
    record["annotations"][0]["segmentation"] = mask_util.encode(full)
    record["annotations"] = record["annotations"][:1]
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.MIN_SIZE_TRAIN = (0,)  # size 0: no resize, only the crop (and a flip)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = crop_type
    cfg.INPUT.CROP.SIZE = crop_size
    mapper = DatasetMapper(cfg, True)
    sizes, kept = set(), 0
    for seed in range(8):
        np.random.seed(seed)
        out = mapper(record)
        h, w = out["image"].shape[1:]
        sizes.add((h, w))
        if crop_type == "relative":
            assert (h, w) == (10, 15)
        elif crop_type == "absolute":
            assert (h, w) == (12, 14)
        inst = out["instances"]
        kept += len(inst)
        for box, mask in zip(inst.gt_boxes.tensor, inst.gt_masks.tensor):
            assert box.tolist() == _box_of(mask)
    assert kept > 0
    if crop_type.endswith("range"):
        assert len(sizes) > 1


@pytest.mark.parametrize(
    "aug",
    [
        T.RandomRotation([90, 180, 270], sample_style="choice"),
        T.RandomRotation([-20, 20]),
        T.RandomExtent((0.8, 1.3), (0.3, 0.3)),
        T.FixedSizeCrop((16, 24)),
        T.ResizeScale(0.5, 1.5, 20, 30),
        T.RandomCrop("absolute", (15, 20)),
        T.RandomApply(T.RandomBrightness(0.5, 1.5), 0.5),
        T.RandomContrast(0.5, 1.5),
        T.RandomSaturation(0.5, 1.5),
        T.RandomLighting(0.5),
    ],
    ids=lambda a: type(a).__name__,
)
def test_every_core_augmentation_moves_box_and_mask_together(record, aug):
    """A rectangle's box and RLE mask stay together through each augmentation: the box is
    the mask's tight box within 1 px of resampling (under a free rotation too: a rotated
    rectangle's extreme points are its corners, which give the box)."""
    import pycocotools.mask as mask_util

    full = np.zeros((H, W), np.uint8, order="F")
    full[Y0:Y1, X0:X1] = 1
    record["annotations"] = [dict(record["annotations"][0], segmentation=mask_util.encode(full))]
    mapper = DatasetMapper(
        is_train=True, augmentations=[aug], image_format="BGR", use_instance_mask=True, instance_mask_format="bitmask"
    )
    checked = 0
    for seed in range(6):
        np.random.seed(seed)
        inst = mapper(record)["instances"]
        for box, mask in zip(inst.gt_boxes.tensor.tolist(), inst.gt_masks.tensor):
            if not mask.any():
                continue
            assert box == pytest.approx(_box_of(mask), abs=1.0)
            checked += 1
    assert checked > 0
