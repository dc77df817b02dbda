"""Mask head: mask_rcnn_loss / mask_rcnn_inference on crafted values, head structure and config."""
import math

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from sephnet.d2.structures import BitMasks, Boxes, Instances, PolygonMasks


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def _left_half_instances(masks, gt_class=1):
    inst = Instances((4, 4))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
    inst.gt_classes = torch.tensor([gt_class])
    inst.gt_masks = masks
    return inst


LEFT_HALF_BITMASK = torch.zeros(1, 4, 4, dtype=torch.bool)
LEFT_HALF_BITMASK[:, :, :2] = True


@pytest.mark.parametrize(
    "masks",
    [BitMasks(LEFT_HALF_BITMASK), PolygonMasks([[[0, 0, 2, 0, 2, 4, 0, 4]]])],
    ids=["bitmask", "polygon"],
)
def test_mask_loss_hand_computed(storage, masks):
    # the gt mask fills the left half of the 4x4 proposal; at M=2 the target is [[1,0],[1,0]]
    logits = torch.full((1, 3, 2, 2), 100.0)  # channels 0 and 2 must be ignored
    logits[0, 1] = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    logits.requires_grad_(True)
    loss = mask_rcnn_loss(logits, [_left_half_instances(masks)])
    expected = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.0, 1) + _bce(3.0, 0)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    latest = storage.latest()
    # predicted fg (logit > 0): [[1,0],[0,1]] vs target [[1,0],[1,0]]
    assert latest["mask_rcnn/accuracy"][0] == pytest.approx(0.5)
    assert latest["mask_rcnn/false_positive"][0] == pytest.approx(0.5)
    assert latest["mask_rcnn/false_negative"][0] == pytest.approx(0.5)
    loss.backward()
    assert torch.all(logits.grad[0, [0, 2]] == 0) and torch.any(logits.grad[0, 1] != 0)


def test_mask_loss_class_agnostic_and_empty(storage):
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    loss = mask_rcnn_loss(logits, [_left_half_instances(BitMasks(LEFT_HALF_BITMASK), gt_class=2)])
    expected = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.0, 1) + _bce(3.0, 0)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    empty = Instances((4, 4))
    empty.proposal_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    empty.gt_masks = BitMasks(torch.zeros(0, 4, 4, dtype=torch.bool))
    no_masks = torch.zeros(0, 3, 2, 2, requires_grad=True)
    loss = mask_rcnn_loss(no_masks, [empty])
    assert loss.item() == 0
    loss.backward()
    assert no_masks.grad is not None


def test_mask_loss_visualisation_every_vis_period(storage):
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    inst = [_left_half_instances(BitMasks(LEFT_HALF_BITMASK))]
    storage.iter = 3
    mask_rcnn_loss(logits, inst, vis_period=2)  # 3 % 2 != 0: nothing stored
    assert storage._vis_data == []
    storage.iter = 4
    mask_rcnn_loss(logits, inst, vis_period=2)
    ((name, image, it),) = storage._vis_data
    assert it == 4 and "(0)" in name
    # RGB image: prediction on the left, gt on the right, side by side along the width
    assert image.shape == (3, 2, 4)
    assert torch.allclose(image[0, :, :2], torch.sigmoid(logits[0, 0]))
    assert image[0, :, 2:].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_mask_loss_rejects_non_square(storage):
    with pytest.raises(ValueError, match="square"):
        mask_rcnn_loss(torch.zeros(1, 1, 2, 3), [])


def test_mask_inference_picks_predicted_class():
    logits = torch.randn(3, 4, 5, 5)
    a, b = Instances((10, 10)), Instances((20, 20))
    a.pred_classes = torch.tensor([3, 0])
    b.pred_classes = torch.tensor([2])
    mask_rcnn_inference(logits, [a, b])
    assert a.pred_masks.shape == (2, 1, 5, 5) and b.pred_masks.shape == (1, 1, 5, 5)
    assert torch.allclose(a.pred_masks[0, 0], torch.sigmoid(logits[0, 3]), atol=1e-7)
    assert torch.allclose(a.pred_masks[1, 0], torch.sigmoid(logits[1, 0]), atol=1e-7)
    assert torch.allclose(b.pred_masks[0, 0], torch.sigmoid(logits[2, 2]), atol=1e-7)

    agnostic = torch.randn(1, 1, 5, 5)
    c = Instances((10, 10))
    c.pred_classes = torch.tensor([2])
    mask_rcnn_inference(agnostic, [c])
    assert torch.allclose(c.pred_masks, torch.sigmoid(agnostic), atol=1e-7)


def test_conv_upsample_head_structure_and_init():
    head = MaskRCNNConvUpsampleHead(
        ShapeSpec(channels=8, height=7, width=7), num_classes=3, conv_dims=[16, 16, 12]
    )
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "mask_fcn1.weight": (16, 8, 3, 3),
        "mask_fcn1.bias": (16,),
        "mask_fcn2.weight": (16, 16, 3, 3),
        "mask_fcn2.bias": (16,),
        "deconv.weight": (16, 12, 2, 2),
        "deconv.bias": (12,),
        "predictor.weight": (3, 12, 1, 1),
        "predictor.bias": (3,),
    }
    assert [n for n, _ in head.named_children()] == [
        "mask_fcn1", "mask_fcn2", "deconv", "deconv_relu", "predictor",
    ]
    assert torch.all(head.predictor.bias == 0) and head.predictor.weight.abs().max() < 0.01
    assert torch.all(head.deconv.bias == 0) and torch.all(head.mask_fcn1.bias == 0)
    assert head.layers(torch.randn(2, 8, 7, 7)).shape == (2, 3, 14, 14)
    with pytest.raises(ValueError, match="conv_dims"):
        MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=3, conv_dims=[])


def test_head_forward_train_and_eval(storage):
    head = MaskRCNNConvUpsampleHead(
        ShapeSpec(channels=4, height=1, width=1), num_classes=2, conv_dims=[4], loss_weight=2.0
    )
    inst = _left_half_instances(BitMasks(LEFT_HALF_BITMASK), gt_class=1)
    x = torch.randn(1, 4, 1, 1)
    losses = head(x, [inst])
    logits = head.layers(x)
    assert set(losses) == {"loss_mask"}
    assert losses["loss_mask"].item() == pytest.approx(2.0 * mask_rcnn_loss(logits, [inst]).item())

    head.eval()
    pred = Instances((4, 4))
    pred.pred_classes = torch.tensor([0])
    out = head(x, [pred])
    assert out[0] is pred and pred.pred_masks.shape == (1, 1, 2, 2)


def test_build_mask_head_from_config():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32  # GN uses 32 groups
    cfg.MODEL.ROI_MASK_HEAD.NORM = "GN"
    cfg.VIS_PERIOD = 7
    head = build_mask_head(cfg, ShapeSpec(channels=4, height=7, width=7))
    assert isinstance(head, MaskRCNNConvUpsampleHead) and head.vis_period == 7
    assert set(head.state_dict()) == {
        "mask_fcn1.weight", "mask_fcn1.norm.weight", "mask_fcn1.norm.bias",
        "deconv.weight", "deconv.bias", "predictor.weight", "predictor.bias",
    }
    assert head.predictor.out_channels == 5
    cfg.MODEL.ROI_MASK_HEAD.NORM = ""
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    assert build_mask_head(cfg, ShapeSpec(channels=4)).predictor.out_channels == 1
    assert "MaskRCNNConvUpsampleHead" in ROI_MASK_HEAD_REGISTRY
