"""Core RetinaNet and FCOS: anchor labelling, FCOS targets and centerness by hand, losses
and inference contracts on a tiny FPN."""
import math

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.modeling import build_model
from sephnet.d2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from sephnet.d2.modeling.meta_arch.fcos import FCOS, FCOSHead
from sephnet.d2.structures import Boxes, Instances
from sephnet.d2.utils.events import EventStorage


def _tiny_retinanet_cfg():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[x] for x in (32, 64, 128, 256, 512)]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]
    return cfg


def _gt(boxes, classes, size=(64, 64)):
    return Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)), gt_classes=torch.tensor(classes))


def test_permute_to_n_hwa_k_orders_location_then_anchor():
    x = torch.arange(2 * 3 * 1 * 2).view(1, 2 * 3, 1, 2)  # A=2, K=3, H=1, W=2
    out = permute_to_N_HWA_K(x, 3)
    assert out.shape == (1, 4, 3)
    # location 0 anchor 0 holds channels 0..2, location 0 anchor 1 channels 3..5, at x=0.
    assert out[0, 0].tolist() == [0, 2, 4] and out[0, 1].tolist() == [6, 8, 10]
    assert out[0, 2].tolist() == [1, 3, 5]


def test_retinanet_label_anchors_by_iou():
    model = build_model(_tiny_retinanet_cfg())
    anchors = [
        Boxes(torch.tensor([[0.0, 0, 20, 20], [0, 0, 13, 20], [40, 40, 60, 60], [0, 0, 15, 20], [0, 0, 9, 20]]))
    ]
    labels, boxes = model.label_anchors(anchors, [_gt([[0.0, 0, 20, 20]], [2])])
    # IoU 1, 0.65, 0.75 -> class 2 (>= 0.5); 0 -> background (3); 0.45 -> ignored (-1).
    assert labels[0].tolist() == [2, 2, 3, 2, -1]
    assert boxes[0][0].tolist() == [0.0, 0, 20, 20]
    labels, _ = model.label_anchors(anchors, [_gt([[0.0, 0, 20, 9]], [1])])
    # IoUs 0.45, 0.36, 0, 0.39, 0.29: no anchor reaches 0.5; the best one is a low-quality match.
    assert labels[0].tolist() == [1, 3, 3, 3, 3]
    labels, _ = model.label_anchors(anchors, [_gt(torch.zeros(0, 4).tolist(), [])])
    assert labels[0].tolist() == [3, 3, 3, 3, 3]


def test_retinanet_trains_and_infers_on_a_tiny_fpn():
    torch.manual_seed(0)
    model = build_model(_tiny_retinanet_cfg())
    batch = [
        {"image": 255 * torch.rand(3, 64, 64), "instances": _gt([[8.0, 8, 40, 40]], [1])},
        {"image": 255 * torch.rand(3, 64, 64), "instances": _gt(torch.zeros(0, 4).tolist(), [])},
    ]
    with EventStorage(0) as storage:
        losses = model(batch)
    assert sorted(losses) == ["loss_box_reg", "loss_cls"]
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert storage.history("num_pos_anchors").latest() > 0
    # EMA normaliser: 0.9 * 100 + 0.1 * num_pos.
    num_pos = 2 * storage.history("num_pos_anchors").latest()
    assert model.loss_normalizer == pytest.approx(90 + 0.1 * num_pos)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 128, "width": 128}])
    inst = out[0]["instances"]
    assert inst.image_size == (128, 128)
    assert len(inst) <= 100 and set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}


def _fcos(strides=(8, 16)):
    class _Backbone(torch.nn.Module):
        size_divisibility = 0

        def output_shape(self):
            from sephnet.d2.layers import ShapeSpec

            return {f"p{int(math.log2(s))}": ShapeSpec(channels=4, stride=s) for s in strides}

    shapes = list(_Backbone().output_shape().values())
    head = FCOSHead(input_shape=shapes, conv_dims=[4], num_classes=2)
    return FCOS(backbone=_Backbone(), head=head, num_classes=2, pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1])


def test_fcos_matching_center_sampling_scale_ranges_and_smallest_box():
    model = _fcos()
    # Level stride 8 (range 0..64) with points at centres 4, 12, ...; level stride 16 (64..inf).
    anchors = [
        Boxes(torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16], [32, 32, 40, 40]])),  # centres 4, 12, 36
        Boxes(torch.tensor([[0.0, 0, 16, 16], [64, 64, 80, 80]])),  # centres 8, 72
    ]
    gt = _gt([[0.0, 0, 24, 24], [2.0, 2, 14, 14], [0.0, 0, 200, 200]], [0, 1, 1], size=(200, 200))
    (index,) = model.match_anchors(anchors, [gt])
    # centre 4: inside gts 0, 1 (and 2, whose max distance 196 > 64 is out of range on level 0);
    #   the smaller of 0 and 1 wins -> 1.
    # centre 12: gt 0 (|12-12| < 12, max dist 12) and gt 1 (|12-8| < 12, max dist 10) -> 1.
    # centre 36: gt 0 does not contain it; gt 2 is too far from its centre (|36-100| >= 12).
    # level 1, centre 8: gt 2 is 92 from it (>= 1.5 * 16); gts 0/1 reach < 64 -> unmatched.
    # level 1, centre 72: |72-100| = 28 > 24 -> unmatched.
    assert index.tolist() == [1, 1, -1, -1, -1]
    labels, boxes = model.label_anchors(anchors, [gt])
    assert labels[0].tolist() == [1, 1, 2, 2, 2]  # 2 = background


def test_fcos_centerness_targets_by_hand():
    model = _fcos()
    anchors = [Boxes(torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8]]))]  # centres (4, 4), (12, 4)
    gt_boxes = [Boxes(torch.tensor([[0.0, 0, 16, 8], [0.0, 0, 16, 8]]))]
    ctr = model.compute_ctrness_targets(anchors, gt_boxes)
    # (4, 4) in [0, 16] x [0, 8]: l=4, r=12, t=4, b=4 -> sqrt(4/12 * 1).
    torch.testing.assert_close(ctr, torch.tensor([[math.sqrt(1 / 3), math.sqrt(1 / 3)]]))
    anchors = [Boxes(torch.tensor([[4.0, 0, 12, 8]]))]  # centre (8, 4): the box centre
    assert model.compute_ctrness_targets(anchors, [Boxes(torch.tensor([[0.0, 0, 16, 8]]))]).item() == 1.0


def test_fcos_losses_and_inference_contract():
    torch.manual_seed(0)
    model = _fcos()
    features = [torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)]
    predictions = model.head(features)
    with EventStorage(0):
        losses = model.forward_training(None, features, predictions, [_gt([[4.0, 4, 30, 30]], [1], (64, 64))])
    assert sorted(losses) == ["loss_fcos_cls", "loss_fcos_ctr", "loss_fcos_loc"]
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
