"""SephOutputLayers with MODEL.SEPH.ROI_LOSS losses and detectron2's DIoU/CIoU, by hand."""
import math

import pytest
import torch

from sephnet.backend import Box2BoxTransform, Boxes, EventStorage, Instances, ShapeSpec
from sephnet.config import validate_sephnet_config
from sephnet.modeling.losses import ROIBoxRegressionLoss, ROIClassificationLoss
from sephnet.modeling.roi_heads.predictor.box_predictor import SephOutputLayers, SephPredictions

K = 2
SHAPE = ShapeSpec(channels=4)


def _predictor(**kwargs):
    return SephOutputLayers(
        SHAPE, box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), num_classes=K, **kwargs
    )


def _one_roi(proposal, gt, cls=0):
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.tensor([proposal], dtype=torch.float64))
    p.gt_boxes = Boxes(torch.tensor([gt], dtype=torch.float64))
    p.gt_classes = torch.tensor([cls])
    return p


def _predictions(logits, r=1):
    return SephPredictions(
        torch.tensor(logits, dtype=torch.float64), torch.zeros(r, 4 * K, dtype=torch.float64)
    )


def _losses(predictor, predictions, proposals):
    with EventStorage():
        return predictor.losses(predictions, proposals)


def test_diou_loss_through_the_predictor():
    # zero deltas: the decoded box is the proposal [0,0,2,2]; gt [1,1,3,3]:
    # IoU 1/7, centre distance^2 2, enclosing diagonal^2 18
    predictor = _predictor(box_reg_loss_type="diou")
    loss = _losses(predictor, _predictions([[0.0, 0.0, 0.0]]), [_one_roi([0, 0, 2, 2], [1, 1, 3, 3])])
    assert loss["loss_box_reg"].item() == pytest.approx(1 - 1 / 7 + 2 / 18, abs=1e-6)


def test_ciou_loss_through_the_predictor():
    # pred [0,0,2,4] (w 2, h 4), gt [0,0,4,4]: IoU 8/16, centre distance^2 1, diagonal^2 32,
    # v = 4/pi^2 (atan(1) - atan(0.5))^2, alpha = v / (1 - IoU + v)
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(0.5)) ** 2
    expected = 0.5 + 1 / 32 + v / (0.5 + v) * v
    predictor = _predictor(box_reg_loss_type="ciou")
    loss = _losses(predictor, _predictions([[0.0, 0.0, 0.0]]), [_one_roi([0, 0, 2, 4], [0, 0, 4, 4])])
    assert loss["loss_box_reg"].item() == pytest.approx(expected, abs=1e-6)


def test_focal_classification_loss_is_averaged_over_rois():
    predictor = _predictor(cls_loss=ROIClassificationLoss("focal", focal_gamma=2.0))
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]))
    p.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]))
    p.gt_classes = torch.tensor([0, K])
    p.gt_is_matched = torch.tensor([True, False])
    loss = _losses(predictor, _predictions([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], r=2), [p])
    z0, z1 = math.exp(2) + 2, math.e + 2
    fl0 = -((1 - math.exp(2) / z0) ** 2) * math.log(math.exp(2) / z0)
    fl1 = -((1 - math.e / z1) ** 2) * math.log(math.e / z1)
    assert loss["loss_cls"].item() == pytest.approx((fl0 + fl1) / 2, rel=1e-9)
    per_roi = predictor.roi_classification_losses(
        _predictions([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], r=2), [p]
    )
    assert per_roi.tolist() == pytest.approx([fl0, fl1], rel=1e-9)


def test_sephnet_box_loss_replaces_the_upstream_type():
    predictor = _predictor(box_loss=ROIBoxRegressionLoss("iou"))
    loss = _losses(predictor, _predictions([[0.0, 0.0, 0.0]]), [_one_roi([0, 0, 2, 2], [1, 1, 3, 3])])
    assert loss["loss_box_reg"].item() == pytest.approx(1 - 1 / 7, abs=1e-6)


def test_empty_batch_gives_zero_losses_with_custom_losses():
    predictor = _predictor(
        cls_loss=ROIClassificationLoss("ghm_c"), box_loss=ROIBoxRegressionLoss("ghm_r")
    )
    p = Instances((10, 10))
    p.proposal_boxes = Boxes(torch.zeros(0, 4))
    p.gt_boxes = Boxes(torch.zeros(0, 4))
    p.gt_classes = torch.zeros(0, dtype=torch.int64)
    preds = SephPredictions(torch.zeros(0, K + 1, requires_grad=True), torch.zeros(0, 4 * K))
    loss = _losses(predictor, preds, [p])
    assert loss["loss_cls"].item() == 0.0 and loss["loss_box_reg"].item() == 0.0
    loss["loss_cls"].backward()


def _cfg(sephnet_cfg, **roi_loss):
    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    for key, value in roi_loss.items():
        cfg.MODEL.SEPH.ROI_LOSS[key] = value
    return cfg


def test_from_config_builds_the_configured_losses(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, CLS_TYPE="ghm_c", BOX_TYPE="ghm_r", GHM_MOMENTUM=0.75, GHM_BINS=30)
    validate_sephnet_config(cfg)
    predictor = SephOutputLayers(cfg, SHAPE)
    assert predictor.cls_loss.kind == "ghm_c" and predictor.box_loss.kind == "ghm_r"
    assert predictor.cls_loss.ghm.bins == 30 and predictor.box_loss.ghm.momentum == 0.75
    assert {"cls_loss.ghm.acc_count", "box_loss.ghm.acc_count"} <= set(predictor.state_dict())
    default = SephOutputLayers(_cfg(sephnet_cfg), SHAPE)
    assert default.cls_loss is None and default.box_loss is None


@pytest.mark.parametrize(
    "keys, other, match",
    [
        ({"CLS_TYPE": "sigmoid"}, {}, "CLS_TYPE='sigmoid'"),
        ({"BOX_TYPE": "l1"}, {}, "BOX_TYPE='l1'"),
        ({"FOCAL_GAMMA": 1.0}, {}, "FOCAL_GAMMA=1.0 is only read"),
        ({"CLS_TYPE": "focal", "LABEL_SMOOTHING": 0.1}, {}, "LABEL_SMOOTHING=0.1 is only read"),
        ({"GHM_BINS": 5}, {}, "GHM_BINS=5 is only read"),
        ({"BALANCED_L1_ALPHA": 0.0}, {}, "BALANCED_L1_ALPHA=0.0"),
        ({"GHM_MOMENTUM": 1.0, "CLS_TYPE": "ghm_c"}, {}, "GHM_MOMENTUM=1.0"),
        ({"BOX_TYPE": "iou"}, {"BBOX_REG_LOSS_TYPE": "giou"}, "both choose the box loss"),
        ({"CLS_TYPE": "focal"}, {"ROI_HEADS_NAME": "StandardROIHeads"}, "inside a Seph ROI head"),
    ],
)
def test_bad_roi_loss_keys_are_refused(keys, other, match, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **keys)
    if "BBOX_REG_LOSS_TYPE" in other:
        cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = other["BBOX_REG_LOSS_TYPE"]
    if "ROI_HEADS_NAME" in other:
        cfg.MODEL.ROI_HEADS.NAME = other["ROI_HEADS_NAME"]
    with pytest.raises(ValueError, match=match):
        validate_sephnet_config(cfg)


def test_config_choice_lists_match_the_loss_module():
    from sephnet.config import roi_loss
    from sephnet.modeling.losses import BOX_LOSS_TYPES, CLS_LOSS_TYPES

    assert roi_loss._CLS_TYPES == CLS_LOSS_TYPES and roi_loss._BOX_TYPES == BOX_LOSS_TYPES
