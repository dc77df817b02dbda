"""detection_utils: image reading/checking, annotation transforms, Instances building."""
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from sephnet.d2.config import get_cfg
from sephnet.d2.data import detection_utils as utils
from sephnet.d2.data import transforms as T
from sephnet.d2.data.catalog import MetadataCatalog
from sephnet.d2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks


def _save_rgb(tmp_path, array, name="img.png", **kwargs) -> str:
    path = os.path.join(str(tmp_path), name)
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_read_image_formats(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 100, 200
    path = _save_rgb(tmp_path, rgb)
    np.testing.assert_array_equal(utils.read_image(path, "RGB"), rgb)
    np.testing.assert_array_equal(utils.read_image(path, "BGR"), rgb[..., ::-1])
    gray = utils.read_image(path, "L")
    assert gray.shape == (2, 3, 1)
    # PIL's L = (299 R + 587 G + 114 B) / 1000, rounded
    assert abs(int(gray[0, 0, 0]) - round(0.299 * 10 + 0.587 * 100 + 0.114 * 200)) <= 1
    yuv = utils.read_image(path, "YUV-BT.601")
    np.testing.assert_allclose(yuv[0, 0, 0], (0.299 * 10 + 0.587 * 100 + 0.114 * 200) / 255, atol=1e-6)
    back = utils.convert_image_to_rgb(yuv, "YUV-BT.601")
    np.testing.assert_allclose(back[0, 0], [10, 100, 200], atol=0.1)
    np.testing.assert_array_equal(utils.convert_image_to_rgb(utils.read_image(path, "BGR"), "BGR"), rgb)


def test_read_image_applies_exif_rotation(tmp_path):
    array = np.zeros((4, 8, 3), np.uint8)
    array[:, :4] = 255  # left half white
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 CW to display"
    path = os.path.join(str(tmp_path), "rot.jpg")
    Image.fromarray(array).save(path, exif=exif, quality=100)
    out = utils.read_image(path, "RGB")
    assert out.shape == (8, 4, 3)
    assert out[:3].mean() > 200 and out[5:].mean() < 50  # the white half is now on top


def test_read_image_missing_and_unreadable_files_name_the_file(tmp_path):
    missing = os.path.join(str(tmp_path), "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        utils.read_image(missing)
    broken = os.path.join(str(tmp_path), "broken.jpg")
    with open(broken, "w") as f:
        f.write("not an image")
    with pytest.raises(ValueError, match="broken.jpg") as info:
        utils.read_image(broken)
    assert isinstance(info.value, OSError)  # what PIL (and so detectron2) raises


def test_check_image_size():
    image = np.zeros((5, 7, 3), np.uint8)
    record = {"file_name": "x/a.jpg"}
    utils.check_image_size(record, image)
    assert (record["width"], record["height"]) == (7, 5)
    with pytest.raises(utils.SizeMismatchError) as info:
        utils.check_image_size({"file_name": "x/b.jpg", "width": 8, "height": 5}, image)
    message = str(info.value)
    assert "x/b.jpg" in message and "(7, 5)" in message and "(8, 5)" in message
    assert isinstance(info.value, ValueError)


def _flip_then_double():
    return T.TransformList([T.HFlipTransform(10), T.ResizeTransform(6, 10, 12, 20)])


def test_transform_instance_annotations_box_polygon_rle():
    mask = np.zeros((6, 10), np.uint8)
    mask[1:3, 2:5] = 1
    anno = {
        "bbox": [2, 1, 3, 2],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": [[2, 1, 5, 1, 5, 3, 2, 3]],
        "category_id": 0,
    }
    out = utils.transform_instance_annotations(dict(anno), _flip_then_double(), (12, 20))
    # flip x -> 10 - x: box [5, 1, 8, 3]; then x2: [10, 2, 16, 6]
    np.testing.assert_allclose(out["bbox"], [10, 2, 16, 6])
    assert out["bbox_mode"] == BoxMode.XYXY_ABS
    np.testing.assert_allclose(out["segmentation"][0], [16, 2, 10, 2, 10, 6, 16, 6])

    rle = dict(anno, segmentation=mask_util.encode(np.asfortranarray(mask)))
    out = utils.transform_instance_annotations(rle, _flip_then_double(), (12, 20))
    expected = np.kron(mask[:, ::-1], np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(out["segmentation"], expected)


def test_transform_instance_annotations_clips_box():
    anno = {"bbox": [-5, -3, 8, 20], "bbox_mode": BoxMode.XYXY_ABS}
    out = utils.transform_instance_annotations(anno, [T.NoOpTransform()], (10, 6))
    np.testing.assert_allclose(out["bbox"], [0, 0, 6, 10])


def test_transform_unknown_segmentation_type():
    anno = {"bbox": [0, 0, 1, 1], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": "oops"}
    with pytest.raises(ValueError, match="str"):
        utils.transform_instance_annotations(anno, [T.NoOpTransform()], (4, 4))


def _annos():
    return [
        {"bbox": [1, 1, 4, 3], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 2,
         "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
        {"bbox": [0, 0, 2, 2], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
    ]


def test_annotations_to_instances_polygon_and_bitmask():
    inst = utils.annotations_to_instances(_annos(), (5, 6))
    assert inst.image_size == (5, 6)
    assert inst.gt_boxes.tensor.tolist() == [[1.0, 1, 4, 3], [0, 0, 2, 2]]
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [2, 0]
    assert isinstance(inst.gt_masks, PolygonMasks)

    bit = utils.annotations_to_instances(_annos(), (5, 6), mask_format="bitmask")
    assert isinstance(bit.gt_masks, BitMasks)
    assert tuple(bit.gt_masks.tensor.shape) == (2, 5, 6)
    assert bit.gt_masks.tensor[0].sum().item() == 6  # 3 x 2 rectangle
    with pytest.raises(ValueError, match="mask_format"):
        utils.annotations_to_instances(_annos(), (5, 6), mask_format="rle")


def test_annotations_to_instances_empty():
    inst = utils.annotations_to_instances([], (5, 6))
    assert len(inst) == 0 and tuple(inst.gt_boxes.tensor.shape) == (0, 4)
    assert not inst.has("gt_masks")


def test_filter_empty_instances():
    inst = Instances((10, 10))
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 5, 5], [1, 1, 1, 4], [2, 2, 3, 3]]))
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, 1, 1] = True
    masks[1, 1, 1] = True
    inst.gt_masks = BitMasks(masks)
    kept, keep = utils.filter_empty_instances(inst, return_mask=True)
    assert keep.tolist() == [True, False, False]  # zero-width box, then empty mask
    assert len(kept) == 1
    assert len(utils.filter_empty_instances(inst, by_mask=False)) == 2
    assert len(utils.filter_empty_instances(inst, by_box=False)) == 2


def test_build_augmentation_from_config():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (640, 672)
    train = utils.build_augmentation(cfg, True)
    assert isinstance(train[0], T.ResizeShortestEdge) and train[0].short_edge_length == (640, 672)
    assert train[0].max_size == 1333 and not train[0].is_range
    assert isinstance(train[1], T.RandomFlip) and train[1].horizontal
    test = utils.build_augmentation(cfg, False)
    assert len(test) == 1 and test[0].short_edge_length == (800, 800)
    cfg.INPUT.RANDOM_FLIP = "none"
    assert len(utils.build_augmentation(cfg, True)) == 1
    cfg.INPUT.RANDOM_FLIP = "vertical"
    assert utils.build_augmentation(cfg, True)[1].vertical


def test_check_metadata_consistency():
    names = ["_consist_a", "_consist_b"]
    try:
        MetadataCatalog.get(names[0]).thing_classes = ["a"]
        MetadataCatalog.get(names[1]).thing_classes = ["a"]
        utils.check_metadata_consistency("thing_classes", names)
        MetadataCatalog.remove(names[1])
        MetadataCatalog.get(names[1]).thing_classes = ["b"]
        with pytest.raises(ValueError, match="thing_classes"):
            utils.check_metadata_consistency("thing_classes", names)
    finally:
        for n in names:
            MetadataCatalog.pop(n, None)


def test_transform_proposals_clips_filters_and_keeps_topk():
    record = {
        "proposal_boxes": np.array([[0, 0, 4, 4], [2, 2, 2, 9], [1, 1, 30, 3]], np.float32),
        "proposal_objectness_logits": np.array([3.0, 2.0, 1.0]),
        "proposal_bbox_mode": BoxMode.XYXY_ABS,
    }
    utils.transform_proposals(record, (10, 20), T.TransformList([T.HFlipTransform(20)]), proposal_topk=5)
    proposals = record["proposals"]
    assert "proposal_boxes" not in record and proposals.image_size == (10, 20)
    # flipped: [16, 0, 20, 4], [18, 2, 18, 9] (empty: dropped), [-10, 1, 19, 3] -> clipped [0, 1, 19, 3]
    assert proposals.proposal_boxes.tensor.tolist() == [[16.0, 0, 20, 4], [0, 1, 19, 3]]
    assert proposals.objectness_logits.dtype == torch.float32
    assert proposals.objectness_logits.tolist() == [3.0, 1.0]


def test_gen_crop_transform_with_instance_contains_the_box_center():
    instance = {"bbox": [10, 10, 100, 100], "bbox_mode": BoxMode.XYXY_ABS}  # centre (55, 55)
    np.random.seed(0)
    offsets = set()
    for _ in range(50):
        tfm = utils.gen_crop_transform_with_instance((10, 20), (150, 150), instance)
        assert (tfm.w, tfm.h) == (20, 10)
        assert tfm.x0 <= 55 <= tfm.x0 + tfm.w and tfm.y0 <= 55 <= tfm.y0 + tfm.h
        offsets.add((tfm.x0, tfm.y0))
    # every admissible corner: x0 in [35, 55], y0 in [45, 55]
    assert {x for x, _ in offsets} <= set(range(35, 56)) and len(offsets) > 20
    # near the border the window stays inside the image: centre 145, so x0 in [135, 140]
    corner = {"bbox": [140, 140, 150, 150], "bbox_mode": BoxMode.XYXY_ABS}
    corners = {
        (t.x0, t.y0)
        for t in (utils.gen_crop_transform_with_instance((10, 10), (150, 150), corner) for _ in range(60))
    }
    assert {x for x, _ in corners} == set(range(135, 141)) == {y for _, y in corners}


def test_gen_crop_transform_with_instance_errors():
    instance = {"bbox": [10, 10, 100, 100], "bbox_mode": BoxMode.XYXY_ABS}
    with pytest.raises(ValueError, match="outside the image"):
        utils.gen_crop_transform_with_instance((10, 10), (15, 15), instance)
    with pytest.raises(AssertionError, match="larger than the image"):
        utils.gen_crop_transform_with_instance((200, 10), (150, 150), instance)
