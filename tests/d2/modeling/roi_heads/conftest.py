"""Fixtures shared by the ROI-head tests: a tiny config, fake FPN features, proposals and gt.

Image size 64x64 (two images), features p2 (stride 4, 16x16) and p3 (stride 8, 8x8) with 8
channels, 3 foreground classes.
"""
from typing import Callable, Dict, List

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.structures import BitMasks, Boxes, Instances
from sephnet.d2.utils.events import EventStorage

IMAGE_SIZE = (64, 64)


@pytest.fixture
def storage():
    with EventStorage() as s:
        yield s


@pytest.fixture
def tiny_cfg():
    """A small FPN mask R-CNN ROI-heads config (StandardROIHeads)."""
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 7
    return cfg


@pytest.fixture
def fpn_shapes() -> Dict[str, ShapeSpec]:
    return {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


@pytest.fixture
def fpn_features() -> Dict[str, torch.Tensor]:
    return {"p2": torch.randn(2, 8, 16, 16), "p3": torch.randn(2, 8, 8, 8)}


def _box_mask(box: List[float], size=IMAGE_SIZE) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def make_targets() -> Callable[..., List[Instances]]:
    """Factory: per image a list of (box, class); masks fill the boxes."""

    def make(per_image):
        targets = []
        for objects in per_image:
            inst = Instances(IMAGE_SIZE)
            boxes = [box for box, _ in objects]
            inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.gt_classes = torch.tensor([c for _, c in objects], dtype=torch.int64)
            if boxes:
                masks = torch.stack([_box_mask(b) for b in boxes])
            else:
                masks = torch.zeros((0,) + IMAGE_SIZE, dtype=torch.bool)
            inst.gt_masks = BitMasks(masks)
            targets.append(inst)
        return targets

    return make


@pytest.fixture
def make_proposals() -> Callable[..., List[Instances]]:
    """Factory: per image a list of proposal boxes (objectness 0)."""

    def make(per_image):
        out = []
        for boxes in per_image:
            inst = Instances(IMAGE_SIZE)
            inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.objectness_logits = torch.zeros(len(boxes))
            out.append(inst)
        return out

    return make


@pytest.fixture
def train_inputs(make_targets, make_proposals):
    """Two images: the first with two objects, the second with none."""
    targets = make_targets(
        [[([4.0, 4.0, 28.0, 30.0], 0), ([30.0, 34.0, 60.0, 60.0], 2)], []]
    )
    proposals = make_proposals(
        [
            [[5, 4, 28, 29], [30, 33, 59, 60], [0, 40, 20, 63], [40, 2, 62, 20], [10, 10, 40, 40]],
            [[2, 2, 30, 30], [20, 20, 50, 60], [33, 5, 63, 25]],
        ]
    )
    return proposals, targets
