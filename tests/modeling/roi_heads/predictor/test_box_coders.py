"""Corner-offset box coder (sephv24): hand values, round trip, ordering, selection by config."""
import pytest
import torch

import sephnet.modeling.roi_heads  # noqa: F401  (registers heads and predictor)
from sephnet.backend import Box2BoxTransform, ShapeSpec, build_roi_heads
from sephnet.config import validate_sephnet_config
from sephnet.modeling.roi_heads.predictor.box_coders import (
    CornerOffsetBox2BoxTransform,
    build_box_coder,
)


def test_corner_offsets_match_hand_values():
    coder = CornerOffsetBox2BoxTransform(step=(10.0, 20.0, 10.0, 4.0))
    proposals = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    gt = torch.tensor([[15.0, 10.0, 40.0, 62.0]])
    # (15-10)/10, (10-20)/20, (40-50)/10, (62-60)/4
    assert torch.allclose(coder.get_deltas(proposals, gt), torch.tensor([[0.5, -0.5, -1.0, 0.5]]))
    assert coder.weights == (0.1, 0.05, 0.1, 0.25)
    decoded = coder.apply_deltas(torch.tensor([[1.0, 1.0, -2.0, 0.0]]), proposals)
    assert torch.allclose(decoded, torch.tensor([[20.0, 40.0, 30.0, 60.0]]))


def test_round_trip_and_class_specific_layout():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    proposals = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 80], dim=1)
    xy = torch.rand(50, 2, generator=g) * 100
    gt = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 80], dim=1)
    coder = CornerOffsetBox2BoxTransform(step=16.0)
    deltas = coder.get_deltas(proposals, gt)
    assert torch.allclose(coder.apply_deltas(deltas, proposals), gt, atol=1e-4)
    # K = 3 boxes per proposal, laid out as Box2BoxTransform's [R, 4K]
    three = torch.cat([deltas, torch.zeros_like(deltas), deltas], dim=1)
    out = coder.apply_deltas(three, proposals)
    assert out.shape == (50, 12)
    assert torch.allclose(out[:, 4:8], proposals) and torch.allclose(out[:, 8:], gt, atol=1e-4)


def test_decoding_forces_max_corner_not_below_min_corner():
    coder = CornerOffsetBox2BoxTransform(step=1.0)
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, -15.0, -12.0]], requires_grad=True)  # x2 -> 5, y2 -> 8
    out = coder.apply_deltas(deltas, box)
    assert out.tolist() == [[10.0, 10.0, 10.0, 10.0]]
    # flipped boxes stay valid for fvcore's GIoU loss, which rejects x2 < x1
    from fvcore.nn import giou_loss

    giou_loss(out, torch.tensor([[12.0, 12.0, 18.0, 18.0]])).sum().backward()
    assert deltas.grad is not None and torch.isfinite(deltas.grad).all()


@pytest.mark.parametrize("step", [0.0, -1.0, (1.0, 2.0), "a", (1.0, 1.0, 1.0, 0.0)])
def test_bad_step_is_rejected(step):
    with pytest.raises(ValueError, match="step"):
        CornerOffsetBox2BoxTransform(step=step)


def test_build_box_coder_from_config(sephnet_cfg):
    cfg = sephnet_cfg()
    default = build_box_coder(cfg)
    assert isinstance(default, Box2BoxTransform)
    assert tuple(default.weights) == tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
    assert tuple(build_box_coder(cfg, weights=(20, 20, 10, 10)).weights) == (20, 20, 10, 10)
    cfg.MODEL.SEPH.BOX_CODER.NAME = "CornerOffsetBox2BoxTransform"
    cfg.MODEL.SEPH.BOX_CODER.CORNER_OFFSET_STEP = 8.0
    coder = build_box_coder(cfg)
    assert isinstance(coder, CornerOffsetBox2BoxTransform) and coder.steps == (8.0,) * 4


def test_config_validation_names_keys(sephnet_cfg):
    cfg = sephnet_cfg()
    validate_sephnet_config(cfg)
    cfg.MODEL.SEPH.BOX_CODER.NAME = "NoSuchCoder"
    with pytest.raises(ValueError, match="MODEL.SEPH.BOX_CODER.NAME='NoSuchCoder'.*available"):
        validate_sephnet_config(cfg)
    cfg = sephnet_cfg()
    cfg.MODEL.SEPH.BOX_CODER.CORNER_OFFSET_STEP = -2.0
    with pytest.raises(ValueError, match="CORNER_OFFSET_STEP=-2.0"):
        validate_sephnet_config(cfg)
    cfg = sephnet_cfg()
    cfg.MODEL.SEPH.BOX_CODER.NAME = "CornerOffsetBox2BoxTransform"
    cfg.MODEL.ROI_HEADS.NAME = "SephCascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    with pytest.raises(ValueError, match="BOX_CODER.NAME.*SephCascadeROIHeads"):
        validate_sephnet_config(cfg)


def test_standard_roi_heads_predictor_uses_the_configured_coder(sephnet_cfg):
    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"  # read by the default UpstreamBoxHead
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.SEPH.BOX_CODER.NAME = "CornerOffsetBox2BoxTransform"
    cfg.MODEL.SEPH.BOX_CODER.CORNER_OFFSET_STEP = [4.0, 4.0, 8.0, 8.0]
    heads = build_roi_heads(cfg, {"p3": ShapeSpec(channels=8, stride=8)})
    coder = heads.box_predictor.box2box_transform
    assert isinstance(coder, CornerOffsetBox2BoxTransform) and coder.steps == (4.0, 4.0, 8.0, 8.0)


@pytest.mark.parametrize("loss_type", ["giou", "smooth_l1"])
def test_sephv24_roi_heads_train_with_the_corner_coder(loss_type, sephnet_cfg):
    from sephnet.backend import Boxes, EventStorage, ImageList, Instances

    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = False
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = loss_type
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 8.0
    cfg.MODEL.SEPH.BOX_CODER.NAME = "CornerOffsetBox2BoxTransform"
    validate_sephnet_config(cfg)
    heads = build_roi_heads(cfg, {"p3": ShapeSpec(channels=8, stride=8)}).train()
    gt = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 30.0]])
    targets = Instances((64, 64), gt_boxes=Boxes(gt), gt_classes=torch.tensor([0, 2]))
    proposals = Instances((64, 64), proposal_boxes=Boxes(gt.clone()))
    proposals.objectness_logits = torch.zeros(2)
    features = {"p3": torch.randn(1, 8, 8, 8, requires_grad=True)}
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])

    # proposals equal to the gt and zero deltas: nothing to regress
    torch.nn.init.zeros_(heads.box_predictor.bbox_pred.weight)
    with EventStorage():
        _, losses = heads(images, features, [proposals], [targets])
    assert losses["loss_box_reg"].abs().item() < 1e-6

    # proposals shifted by (+4, -2) px: the loss is the corner coder's, times 8
    moved = Instances((64, 64), proposal_boxes=Boxes(gt + torch.tensor([4.0, -2.0, 4.0, -2.0])))
    moved.objectness_logits = torch.zeros(2)
    with EventStorage():
        _, losses = heads(images, features, [moved], [targets])
    if loss_type == "smooth_l1":  # L1 of |(-4, 2, -4, 2)| / 16 per ROI, over 2 ROIs
        expected = 8.0 * 2 * (4 + 2 + 4 + 2) / 16 / 2
    else:  # 1 - GIoU of each moved box with its gt (boxes of the same size)
        expected = 0.0
        for g in gt.tolist():
            w, h = g[2] - g[0], g[3] - g[1]
            inter = (w - 4) * (h - 2)
            union = 2 * w * h - inter
            hull = (w + 4) * (h + 2)
            expected += 1 - (inter / union - (hull - union) / hull)
        expected = 8.0 * expected / 2
    assert losses["loss_box_reg"].item() == pytest.approx(expected, rel=1e-4)
    sum(losses.values()).backward()
    assert heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0
