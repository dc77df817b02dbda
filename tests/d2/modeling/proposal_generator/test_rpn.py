"""StandardRPNHead layout/initialisation and RPN labelling, losses, flattening order and config."""
import math
from typing import List

import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.anchor_generator import DefaultAnchorGenerator
from sephnet.d2.modeling.box_regression import Box2BoxTransform
from sephnet.d2.modeling.matcher import Matcher
from sephnet.d2.modeling.proposal_generator import (
    RPN,
    StandardRPNHead,
    build_proposal_generator,
    build_rpn_head,
)
from sephnet.d2.structures import Boxes, ImageList, Instances
from sephnet.d2.utils.events import EventStorage


# ------------------------------------------------------------------------------------ head ---
def test_head_with_one_conv_uses_the_conv_attribute_directly():
    head = StandardRPNHead(in_channels=8, num_anchors=3)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "conv.weight": (8, 8, 3, 3),
        "conv.bias": (8,),
        "objectness_logits.weight": (3, 8, 1, 1),
        "objectness_logits.bias": (3,),
        "anchor_deltas.weight": (12, 8, 1, 1),
        "anchor_deltas.bias": (12,),
    }
    assert isinstance(head.conv.activation, nn.ReLU)


def test_head_with_several_convs_names_them_conv0_conv1():
    head = StandardRPNHead(in_channels=8, num_anchors=2, box_dim=4, conv_dims=[-1, 16])
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["conv.conv0.weight"] == (8, 8, 3, 3)
    assert shapes["conv.conv1.weight"] == (16, 8, 3, 3)
    assert shapes["objectness_logits.weight"] == (2, 16, 1, 1)
    assert shapes["anchor_deltas.weight"] == (8, 16, 1, 1)
    with pytest.raises(ValueError, match="greater than 0"):
        StandardRPNHead(in_channels=8, num_anchors=2, conv_dims=[-1, 0])


def test_head_init_is_normal_std_001_with_zero_bias_and_forward_shapes():
    head = StandardRPNHead(in_channels=64, num_anchors=3)
    for conv in (head.conv, head.objectness_logits, head.anchor_deltas):
        assert torch.count_nonzero(conv.bias) == 0
    assert abs(head.conv.weight.std().item() - 0.01) < 0.001
    assert abs(head.conv.weight.mean().item()) < 0.001
    features = [torch.randn(2, 64, 6, 5), torch.randn(2, 64, 3, 3)]
    logits, deltas = head(features)
    assert [tuple(x.shape) for x in logits] == [(2, 3, 6, 5), (2, 3, 3, 3)]
    assert [tuple(x.shape) for x in deltas] == [(2, 12, 6, 5), (2, 12, 3, 3)]


def test_build_rpn_head_from_config_reads_conv_dims_and_anchor_count():
    cfg = get_cfg()
    cfg.MODEL.RPN.CONV_DIMS = [32, -1]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16, 32]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    head = build_rpn_head(cfg, [ShapeSpec(channels=8, stride=16)])
    assert isinstance(head, StandardRPNHead)
    assert head.conv.conv1.weight.shape == (32, 32, 3, 3)
    assert head.objectness_logits.out_channels == 6  # 2 sizes x 3 aspect ratios
    with pytest.raises(ValueError, match="same channel"):
        build_rpn_head(cfg, [ShapeSpec(channels=8, stride=16), ShapeSpec(channels=4, stride=32)])


# ------------------------------------------------------------------------------------- RPN ---
def _rpn(head: nn.Module = None, batch_size_per_image: int = 256, **kwargs) -> RPN:
    options = dict(
        in_features=["p"],
        head=head if head is not None else StandardRPNHead(in_channels=4, num_anchors=3),
        anchor_generator=DefaultAnchorGenerator(
            sizes=[[2.0]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4], offset=0.5
        ),
        anchor_matcher=Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_topk=(100, 100),
        post_nms_topk=(100, 100),
    )
    options.update(kwargs)
    return RPN(**options)


def _gt(image_size, boxes) -> Instances:
    gt = Instances(image_size)
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    return gt


# Hand-labelled anchors for gt G0 = [0,0,10,10], G1 = [40,40,50,50]:
HAND_ANCHORS = [
    [0.0, 0.0, 10.0, 10.0],  # IoU(G0) = 1 -> positive, matched to G0
    [0.0, 0.0, 10.0, 8.0],  # IoU(G0) = 0.8 -> positive, matched to G0
    [5.0, 0.0, 15.0, 10.0],  # IoU(G0) = 50/150 = 0.33 -> between thresholds: ignored
    [20.0, 20.0, 30.0, 30.0],  # IoU 0 -> negative
    [40.0, 40.0, 60.0, 60.0],  # IoU(G1) = 0.25 < 0.3, but G1's best anchor -> positive
    [100.0, 100.0, 110.0, 110.0],  # negative
    [110.0, 110.0, 125.0, 125.0],  # negative; sticks out of a 120 x 120 image
]
GT_BOXES = [[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]]


def test_label_and_sample_anchors_by_hand():
    rpn = _rpn()
    anchors = [Boxes(torch.tensor(HAND_ANCHORS[:4])), Boxes(torch.tensor(HAND_ANCHORS[4:]))]
    labels, matched = rpn.label_and_sample_anchors(anchors, [_gt((120, 120), GT_BOXES)])
    assert labels[0].tolist() == [1, 1, -1, 0, 1, 0, 0]
    positives = labels[0] == 1
    expected = torch.tensor([GT_BOXES[0], GT_BOXES[0], GT_BOXES[1]])
    assert torch.equal(matched[0][positives], expected)

    # Boundary threshold 0: anchors leaving the image are ignored.
    rpn = _rpn(anchor_boundary_thresh=0)
    labels, _ = rpn.label_and_sample_anchors(anchors, [_gt((120, 120), GT_BOXES)])
    assert labels[0].tolist() == [1, 1, -1, 0, 1, 0, -1]


def test_label_and_sample_anchors_without_gt_gives_negatives_and_zero_boxes():
    rpn = _rpn()
    anchors = [Boxes(torch.tensor(HAND_ANCHORS))]
    labels, matched = rpn.label_and_sample_anchors(anchors, [_gt((120, 120), [])])
    assert labels[0].tolist() == [0] * len(HAND_ANCHORS)
    assert torch.equal(matched[0], torch.zeros(len(HAND_ANCHORS), 4))


def test_subsampling_keeps_batch_size_per_image_anchors():
    rpn = _rpn(batch_size_per_image=4)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, -1, 0], dtype=torch.int8)
    sampled = rpn._subsample_labels(labels.clone())
    assert (sampled == 1).sum() == 2 and (sampled == 0).sum() == 2
    # Only originally positive (negative) entries may be sampled as positive (negative).
    assert bool((labels[sampled == 1] == 1).all()) and bool((labels[sampled == 0] == 0).all())


def _bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


def test_losses_match_a_hand_computation():
    rpn = _rpn(batch_size_per_image=8, loss_weight={"loss_rpn_cls": 2.0, "loss_rpn_loc": 3.0})
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 2.0]]))]
    logits = [torch.tensor([[0.5, -1.0]])]
    deltas = [torch.tensor([[[0.1, -0.2, 0.3, 0.0], [1.0, 1.0, 1.0, 1.0]]])]
    labels = [torch.tensor([1, 0], dtype=torch.int8)]
    gt_boxes = [torch.tensor([[2.0, 1.0, 12.0, 21.0], [0.0, 0.0, 0.0, 0.0]])]
    with EventStorage(0) as storage:
        losses = rpn.losses(anchors, logits, labels, deltas, gt_boxes)
        assert storage.latest()["rpn/num_pos_anchors"][0] == 1
        assert storage.latest()["rpn/num_neg_anchors"][0] == 1
    # Anchor 0: centre (5, 5), size 10 x 10; gt centre (7, 11), size 10 x 20.
    gt_delta = [0.2, 0.6, 0.0, math.log(2.0)]
    l1 = sum(abs(p - g) for p, g in zip([0.1, -0.2, 0.3, 0.0], gt_delta))
    normalizer = 8 * 1
    assert losses["loss_rpn_loc"].item() == pytest.approx(3.0 * l1 / normalizer, rel=1e-5)
    cls = _bce(0.5, 1.0) + _bce(-1.0, 0.0)
    assert losses["loss_rpn_cls"].item() == pytest.approx(2.0 * cls / normalizer, rel=1e-5)


class _EncodedHead(nn.Module):
    """Predicts logit = flat anchor index (y * W + x) * A + a and dx = 0.01 * that index."""

    def forward(self, features: List[torch.Tensor]):
        n, _, h, w = features[0].shape
        num_anchors = 3
        code = torch.arange(h * w * num_anchors, dtype=torch.float32).view(h, w, num_anchors)
        logits = code.permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1)
        deltas = torch.zeros(n, num_anchors, 4, h, w)
        deltas[:, :, 0] = 0.01 * code.permute(2, 0, 1)
        return [logits], [deltas.view(n, num_anchors * 4, h, w)]


def test_predictions_are_flattened_in_anchor_order():
    rpn = _rpn(head=_EncodedHead(), nms_thresh=1.0).eval()
    features = {"p": torch.zeros(1, 4, 3, 4)}
    images = ImageList(torch.zeros(1, 3, 12, 16), [(100, 100)])
    (proposals,), losses = rpn(images, features)
    assert losses == {}
    anchors = rpn.anchor_generator([features["p"]])[0].tensor
    assert len(proposals) == anchors.shape[0] == 36
    index = proposals.objectness_logits.long()
    assert torch.equal(index, torch.arange(35, -1, -1))  # sorted by descending logit
    widths = anchors[index, 2] - anchors[index, 0]
    shift = 0.01 * index.float() * widths
    expected = anchors[index] + torch.stack([shift, torch.zeros_like(shift)] * 2, dim=1)
    assert torch.allclose(proposals.proposal_boxes.tensor, expected, atol=1e-5)


def test_training_forward_needs_gt_and_returns_both_losses():
    rpn = _rpn().train()
    features = {"p": torch.randn(2, 4, 5, 6)}
    images = ImageList(torch.zeros(2, 3, 20, 24), [(20, 24), (18, 22)])
    with pytest.raises(ValueError, match="gt_instances"):
        rpn(images, features)
    gt = [_gt((20, 24), [[2.0, 2.0, 6.0, 5.0]]), _gt((18, 22), [])]
    with EventStorage(0):
        proposals, losses = rpn(images, features, gt)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert [p.image_size for p in proposals] == [(20, 24), (18, 22)]
    assert not proposals[0].proposal_boxes.tensor.requires_grad
    sum(losses.values()).backward()
    assert rpn.rpn_head.anchor_deltas.weight.grad is not None


def test_rpn_from_config_reads_every_key():
    cfg = get_cfg()
    rpn_cfg = cfg.MODEL.RPN
    rpn_cfg.IN_FEATURES = ["p3", "p4"]
    rpn_cfg.IOU_THRESHOLDS = [0.2, 0.6]
    rpn_cfg.BATCH_SIZE_PER_IMAGE = 64
    rpn_cfg.POSITIVE_FRACTION = 0.25
    rpn_cfg.PRE_NMS_TOPK_TRAIN, rpn_cfg.PRE_NMS_TOPK_TEST = 111, 222
    rpn_cfg.POST_NMS_TOPK_TRAIN, rpn_cfg.POST_NMS_TOPK_TEST = 33, 44
    rpn_cfg.NMS_THRESH = 0.55
    rpn_cfg.BOUNDARY_THRESH = 3
    rpn_cfg.BBOX_REG_LOSS_TYPE = "giou"
    rpn_cfg.BBOX_REG_LOSS_WEIGHT = 3.0
    rpn_cfg.LOSS_WEIGHT = 2.0
    rpn_cfg.SMOOTH_L1_BETA = 0.1
    rpn_cfg.BBOX_REG_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
    cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 5
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64]]
    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 6)}

    rpn = build_proposal_generator(cfg, shapes)
    assert isinstance(rpn, RPN)
    assert rpn.in_features == ["p3", "p4"]
    assert rpn.anchor_generator.strides == [8, 16]
    assert rpn.anchor_matcher.thresholds[1:-1] == [0.2, 0.6]
    assert rpn.anchor_matcher.allow_low_quality_matches
    assert rpn.batch_size_per_image == 64 and rpn.positive_fraction == 0.25
    assert rpn.pre_nms_topk == {True: 111, False: 222}
    assert rpn.post_nms_topk == {True: 33, False: 44}
    assert rpn.nms_thresh == 0.55 and rpn.min_box_size == 5.0
    assert rpn.anchor_boundary_thresh == 3
    assert rpn.loss_weight == {"loss_rpn_cls": 2.0, "loss_rpn_loc": 6.0}
    assert rpn.box_reg_loss_type == "giou" and rpn.smooth_l1_beta == 0.1
    assert tuple(rpn.box2box_transform.weights) == (2.0, 2.0, 1.0, 1.0)

    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    assert build_proposal_generator(cfg, shapes) is None


def test_invalid_configuration_errors():
    with pytest.raises(ValueError, match="smooth_l2"):
        _rpn(box_reg_loss_type="smooth_l2")
    cfg = get_cfg()
    with pytest.raises(KeyError, match="p9"):
        cfg.MODEL.RPN.IN_FEATURES = ["p9"]
        build_proposal_generator(cfg, {"p2": ShapeSpec(channels=8, stride=4)})


def test_float_loss_weight_applies_to_both_losses():
    assert _rpn(loss_weight=0.5).loss_weight == {"loss_rpn_cls": 0.5, "loss_rpn_loc": 0.5}
