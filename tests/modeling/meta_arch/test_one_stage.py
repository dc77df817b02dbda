"""SephFCOS and SephATSS: targets, assignment and losses by hand, and their config keys."""
import math

import pytest
import torch

from sephnet.backend import Boxes, EventStorage, FCOSHead, Instances, ShapeSpec
from sephnet.config import validate_sephnet_config
from sephnet.modeling.matchers.atss import ATSSMatcher
from sephnet.modeling.meta_arch.atss import SephATSS, centerness_targets
from sephnet.modeling.meta_arch.fcos import SephFCOS, iou_loss


class _StubBackbone(torch.nn.Module):
    size_divisibility = 0

    def __init__(self, strides=(8, 16)):
        super().__init__()
        self.strides = strides

    def output_shape(self):
        return {f"p{int(math.log2(s))}": ShapeSpec(channels=4, stride=s) for s in self.strides}


def _gt(boxes, classes, size=(200, 200)):
    return Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)), gt_classes=torch.tensor(classes))


def _fcos(**kwargs):
    backbone = _StubBackbone()
    head = FCOSHead(input_shape=list(backbone.output_shape().values()), conv_dims=[4], num_classes=2)
    return SephFCOS(backbone=backbone, head=head, num_classes=2, pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1], **kwargs)


def test_iou_loss_by_hand():
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 4]])
    target = torch.tensor([[1.0, 1, 3, 3], [0, 0, 4, 4]])
    # intersection 1, union 4 + 4 - 1 = 7 -> ln 7; identical boxes -> 0.
    torch.testing.assert_close(iou_loss(pred, target), torch.tensor([math.log(7.0), 0.0]), atol=1e-6, rtol=1e-6)


def test_fcos_center_sampling_off_takes_every_location_inside_the_box():
    anchors = [Boxes(torch.tensor([[0.0, 0, 8, 8], [48, 48, 56, 56]])), Boxes(torch.tensor([[0.0, 0, 16, 16]]))]
    gt = _gt([[0.0, 0, 60, 60]], [1])  # centre (30, 30), reach from (4, 4): 56 < 64
    # With sampling (radius 1.5 x 8 = 12): (4, 4) is 26 from the centre -> not positive;
    # (52, 52) is 22 away -> not positive either.
    assert _fcos().match_anchors(anchors, [gt])[0].tolist() == [-1, -1, -1]
    # Without: both level-0 points lie inside with max distance 56 < 64 -> positive.
    off = _fcos(center_sampling_radius=float("inf"))
    assert off.match_anchors(anchors, [gt])[0].tolist() == [0, 0, -1]


def test_fcos_iou_box_loss_replaces_giou():
    torch.manual_seed(0)
    features = [torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)]
    gt = [_gt([[4.0, 4, 30, 30]], [1], (64, 64))]
    losses = {}
    for box_loss in ("giou", "iou"):
        model = _fcos(box_loss=box_loss)
        torch.manual_seed(1)  # the same head weights for both
        model.head.apply(lambda m: torch.nn.init.normal_(m.weight, std=0.1) if isinstance(m, torch.nn.Conv2d) else None)
        with EventStorage(0):
            losses[box_loss] = model.forward_training(None, features, model.head(features), gt)
    assert losses["giou"]["loss_fcos_cls"].item() == pytest.approx(losses["iou"]["loss_fcos_cls"].item())
    assert losses["iou"]["loss_fcos_loc"].item() > 0
    assert losses["iou"]["loss_fcos_loc"].item() != pytest.approx(losses["giou"]["loss_fcos_loc"].item())
    with pytest.raises(ValueError, match="box_loss"):
        _fcos(box_loss="l1")


def _atss(topk):
    backbone = _StubBackbone(strides=(8,))
    head = FCOSHead(input_shape=list(backbone.output_shape().values()), conv_dims=[4], num_classes=3)
    return SephATSS(
        backbone=backbone,
        head=head,
        head_in_features=["p3"],
        anchor_generator=None,
        box2box_transform=None,
        anchor_matcher=ATSSMatcher(topk=topk, min_iou=0.0),
        num_classes=3,
        pixel_mean=[0, 0, 0],
        pixel_std=[1, 1, 1],
    )


def test_atss_assignment_by_hand():
    anchors = [Boxes(torch.tensor([[0.0, 0, 16, 16], [8, 0, 24, 16], [40, 0, 56, 16]]))]
    model = _atss(topk=2)
    # gt A = anchor 0: candidates anchors 0, 1 (IoU 1, 1/3): mean 2/3 + std 1/3 = 1 -> anchor 0 only.
    # gt B = [4, 0, 20, 16]: candidates 0, 1 (IoU 0.6 each): threshold 0.6 -> both, centres inside.
    labels, boxes = model.label_anchors(anchors, [_gt([[0.0, 0, 16, 16]], [2]), _gt([[4.0, 0, 20, 16]], [1])])
    assert labels[0].tolist() == [2, 3, 3]
    assert labels[1].tolist() == [1, 1, 3]
    assert boxes[1][0].tolist() == [4.0, 0, 20, 16]
    empty, _ = model.label_anchors(anchors, [_gt(torch.zeros(0, 4).tolist(), [])])
    assert empty[0].tolist() == [3, 3, 3]


def test_atss_centerness_targets_by_hand():
    anchors = torch.tensor([[0.0, 0, 16, 16], [8, 0, 24, 16], [40, 0, 56, 16]])
    gt = torch.tensor([[4.0, 0, 20, 16]] * 3)
    # centres (8, 8), (16, 8): l/r = 4/12 and 12/4 -> sqrt(1/3 * 1); (48, 8) is outside -> 0.
    want = torch.tensor([math.sqrt(1 / 3), math.sqrt(1 / 3), 0.0])
    torch.testing.assert_close(centerness_targets(anchors, gt), want)


def _cfg(sephnet_cfg, meta_arch, **seph):
    cfg = sephnet_cfg()
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    for key, value in seph.items():
        node, leaf = key.split(".")
        cfg.MODEL.SEPH[node][leaf] = value
    return cfg


def test_config_keys_are_validated(sephnet_cfg):
    validate_sephnet_config(_cfg(sephnet_cfg, "SephFCOS", **{"FCOS.BOX_LOSS": "iou"}))
    with pytest.raises(ValueError, match="MODEL.SEPH.FCOS.BOX_LOSS='l1'"):
        validate_sephnet_config(_cfg(sephnet_cfg, "SephFCOS", **{"FCOS.BOX_LOSS": "l1"}))
    cfg = _cfg(sephnet_cfg, "SephFCOS")
    cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "giou"
    with pytest.raises(ValueError, match="its box loss is MODEL.SEPH.FCOS.BOX_LOSS"):
        validate_sephnet_config(cfg)
    with pytest.raises(ValueError, match="CENTER_SAMPLING_RADIUS"):
        validate_sephnet_config(_cfg(sephnet_cfg, "SephFCOS", **{"FCOS.CENTER_SAMPLING_RADIUS": 0.0}))
    with pytest.raises(ValueError, match="read only by MODEL.META_ARCHITECTURE='SephFCOS'"):
        validate_sephnet_config(_cfg(sephnet_cfg, "RetinaNet", **{"FCOS.CENTER_SAMPLING": False}))
    cfg = _cfg(sephnet_cfg, "SephATSS")
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]
    validate_sephnet_config(cfg)
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0]]
    with pytest.raises(ValueError, match="one anchor per location"):
        validate_sephnet_config(cfg)
    with pytest.raises(ValueError, match="TOPK=0"):
        validate_sephnet_config(_cfg(sephnet_cfg, "SephATSS", **{"ATSS.TOPK": 0}))
    with pytest.raises(ValueError, match="read only by MODEL.META_ARCHITECTURE='SephATSS'"):
        validate_sephnet_config(_cfg(sephnet_cfg, "RetinaNet", **{"ATSS.TOPK": 5}))
