"""GeneralizedRCNNWithTTA / DatasetMapperTTA (backend's), checked by value on a hand-built
model whose detections are known in every view."""
import numpy as np
import pytest
import torch
from torch import nn

from sephnet.backend import (
    Boxes,
    DatasetMapperTTA,
    GeneralizedRCNN,
    GeneralizedRCNNWithTTA,
    Instances,
    get_cfg,
)

H, W = 20, 40  # original image size


class FixedBoxRCNN(GeneralizedRCNN):
    """A hand-built GeneralizedRCNN: in every view it detects class 1 at view pixels
    [0, 0, 10, 10] with score = short edge / 100, and its mask probabilities (2x2) are
    [[1, 0.2], [0, 0]] in view orientation for any given box."""

    def __init__(self):
        nn.Module.__init__(self)
        self.roi_heads = nn.Module()
        self.roi_heads.mask_on = True
        self.input_format = "BGR"
        self.calls = []

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        assert not do_postprocess
        self.calls.append((self.roi_heads.mask_on, detected_instances is not None))
        out = []
        for i, x in enumerate(batched_inputs):
            hw = tuple(x["image"].shape[1:])
            if detected_instances is None:
                r = Instances(hw)
                r.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
                r.scores = torch.tensor([min(hw) / 100.0])
                r.pred_classes = torch.tensor([1])
            else:
                r = detected_instances[i]
                mask = torch.tensor([[1.0, 0.2], [0.0, 0.0]])
                r.pred_masks = mask.expand(len(r), 1, 2, 2).clone()
            out.append(r)
        return out


def tta_cfg(mask_on=True, flip=True, min_sizes=(20, 40)):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = 1000
    cfg.TEST.AUG.FLIP = flip
    return cfg


def image_input():
    return {"image": torch.zeros(3, H, W, dtype=torch.uint8), "height": H, "width": W}


def sorted_by_x(instances):
    """Detections ordered by (x0, -x1)."""
    boxes = instances.pred_boxes.tensor
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i, 0].item(), -boxes[i, 2].item()))
    return instances[torch.tensor(order, dtype=torch.long)]


def test_mapper_makes_every_size_and_its_mirror():
    image = torch.arange(H * W, dtype=torch.uint8).reshape(1, H, W).expand(3, H, W).clone()
    views = DatasetMapperTTA(tta_cfg())({"image": image, "height": H, "width": W, "id": 7})
    assert [tuple(v["image"].shape) for v in views] == [
        (3, 20, 40), (3, 20, 40), (3, 40, 80), (3, 40, 80)
    ]
    assert all(v["id"] == 7 for v in views)
    # the mirrored view at the original size is the image flipped left-right
    assert torch.equal(views[1]["image"], image.flip(dims=[2]))
    # each view's transforms map original coordinates into the view
    box = np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)
    mapped = [v["transforms"].apply_box(box).tolist() for v in views]
    assert mapped == [[[0, 0, 10, 10]], [[30, 0, 40, 10]], [[0, 0, 20, 20]], [[60, 0, 80, 20]]]


def test_mapper_includes_the_resize_from_the_original_size():
    # the given image is half the original size: views are resized from the original
    views = DatasetMapperTTA(min_sizes=[20], max_size=1000, flip=False)(
        {"image": torch.zeros(3, 10, 20, dtype=torch.uint8), "height": H, "width": W}
    )
    assert tuple(views[0]["image"].shape) == (3, 20, 40)
    box = np.array([[4.0, 2.0, 8.0, 6.0]], dtype=np.float32)
    assert views[0]["transforms"].apply_box(box).tolist() == [[4, 2, 8, 6]]


def test_flip_and_scale_change_the_box_as_computed_by_hand():
    model = FixedBoxRCNN()
    (out,) = GeneralizedRCNNWithTTA(tta_cfg(mask_on=False), model)([image_input()])
    got = sorted_by_x(out["instances"])
    # view [0,0,10,10]: at 20 px it is that box; mirrored, x -> 40 - x; at 40 px (x2) it is
    # [0,0,5,5], mirrored [35,0,40,5]. Pairwise IoU <= 0.25 < NMS 0.5: all four stay.
    assert got.pred_boxes.tensor.tolist() == [
        [0, 0, 10, 10], [0, 0, 5, 5], [30, 0, 40, 10], [35, 0, 40, 5]
    ]
    assert got.scores.tolist() == pytest.approx([0.2, 0.4, 0.2, 0.4])
    assert got.pred_classes.tolist() == [1, 1, 1, 1]
    assert model.calls == [(False, False), (False, False)]  # 4 views, batches of 3


def test_nms_merges_views_that_agree():
    cfg = tta_cfg(mask_on=False, flip=False, min_sizes=(20, 20))
    (out,) = GeneralizedRCNNWithTTA(cfg, FixedBoxRCNN())([image_input()])
    assert out["instances"].pred_boxes.tensor.tolist() == [[0, 0, 10, 10]]


def test_masks_are_predicted_on_merged_boxes_and_averaged_unmirrored():
    model = FixedBoxRCNN()
    cfg = tta_cfg(flip=True, min_sizes=(20,))
    (out,) = GeneralizedRCNNWithTTA(cfg, model)([image_input()])
    inst = sorted_by_x(out["instances"])
    assert model.calls == [(False, False), (True, True)]
    assert model.roi_heads.mask_on  # restored
    masks = inst.pred_masks
    assert masks.shape == (2, H, W) and masks.dtype == torch.bool
    # mean of [[1, .2], [0, 0]] and its mirror [[.2, 1], [0, 0]] = [[.6, .6], [0, 0]]:
    # pasted (bilinear, zero outside) into the 10 px box, only row 2 passes 0.5, over
    # columns 2..7, symmetric left-right
    for box, m in zip(inst.pred_boxes.tensor.int().tolist(), masks):
        x0, y0, x1, y1 = box
        inside = m[y0:y1, x0:x1]
        assert inside.nonzero()[:, 0].unique().tolist() == [2]
        assert inside[2].nonzero()[:, 0].tolist() == [2, 3, 4, 5, 6, 7]
        assert m.sum() == inside.sum()


def test_without_flip_averaging_the_mask_keeps_its_asymmetry():
    (out,) = GeneralizedRCNNWithTTA(tta_cfg(flip=False, min_sizes=(20,)), FixedBoxRCNN())(
        [image_input()]
    )
    inside = out["instances"].pred_masks[0, 0:10, 0:10]
    # [[1, .2], [0, 0]] pasted: the left part of the top rows only
    assert inside[2, 0] and not inside[2, 9]
    assert inside[:, 6:].sum() == 0


def test_images_are_read_from_file_name_when_missing(tmp_path):
    import cv2

    path = str(tmp_path / "im.png")
    cv2.imwrite(path, np.zeros((H, W, 3), dtype=np.uint8))
    (out,) = GeneralizedRCNNWithTTA(tta_cfg(mask_on=False), FixedBoxRCNN())([{"file_name": path}])
    assert out["instances"].image_size == (H, W)
    assert len(out["instances"]) == 4


def test_refuses_other_models_and_keypoints():
    with pytest.raises(AssertionError, match="GeneralizedRCNN"):
        GeneralizedRCNNWithTTA(tta_cfg(), nn.Linear(1, 1))
    cfg = tta_cfg()
    cfg.MODEL.KEYPOINT_ON = True
    with pytest.raises(AssertionError):
        GeneralizedRCNNWithTTA(cfg, FixedBoxRCNN())
