"""SephCascadeROIHeads: per-stage seph heads and coders, one loss set per stage, mean-of-stages
scoring at test time, stage labels, config checks."""
import copy

import pytest
import torch

import sephnet.modeling.roi_heads.cascade  # noqa: F401  (registers SephCascadeROIHeads)
from sephnet.backend import (
    Boxes,
    EventStorage,
    ImageList,
    Instances,
    ShapeSpec,
    build_roi_heads,
    fast_rcnn_inference,
)
from sephnet.config import validate_sephnet_config
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import TwinTowerConvFCHead
from sephnet.modeling.roi_heads.predictor.box_predictor import SephOutputLayers
from sephnet.modeling.roi_heads.cascade import SephCascadeROIHeads

K = 3
LEVELS = {"p3": 8, "p4": 16}
IMAGE = 64
SHAPES = {name: ShapeSpec(channels=8, stride=s) for name, s in LEVELS.items()}
GT = [([[4, 4, 30, 28], [34, 30, 60, 62]], [0, 2]), ([[10, 8, 50, 40]], [1])]


TINY_KEYS = {
    "MODEL.ROI_HEADS.NAME": "SephCascadeROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": list(LEVELS),
    "MODEL.ROI_HEADS.NUM_CLASSES": K,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 4,
    "MODEL.SEPH.BOX_HEAD.NAME": "TwinTowerConvFCHead",
    "MODEL.SEPH.BOX_HEAD.NUM_CONV": 1,
    "MODEL.SEPH.BOX_HEAD.CONV_DIM": 8,
    "MODEL.SEPH.BOX_HEAD.NUM_FC": 1,
    "MODEL.SEPH.BOX_HEAD.FC_DIM": 16,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
    "TEST.DETECTIONS_PER_IMAGE": 20,
}


def _cfg(sephnet_cfg, **overrides):
    """The shared config with this file's keys, then ``overrides`` (dotted keys)."""
    return sephnet_cfg({**TINY_KEYS, **overrides})


def _features(n=2):
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(n, 8, IMAGE // s, IMAGE // s, generator=g) for k, s in LEVELS.items()}


def _targets():
    out = []
    for boxes, classes in GT:
        t = Instances((IMAGE, IMAGE))
        t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        t.gt_classes = torch.tensor(classes)
        out.append(t)
    return out


def _proposals(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for boxes, _ in GT:
        gt = torch.tensor(boxes, dtype=torch.float32)
        xy = torch.rand(20, 2, generator=g) * 40
        rand = torch.cat([xy, xy + 6 + torch.rand(20, 2, generator=g) * 20], dim=1)
        jitter = torch.cat([gt + torch.randn(gt.shape, generator=g) * 2 for _ in range(3)])
        p = Instances((IMAGE, IMAGE))
        p.proposal_boxes = Boxes(torch.cat([rand, jitter]).clamp(0, IMAGE))
        p.objectness_logits = torch.randn(len(p.proposal_boxes), generator=g)
        out.append(p)
    return out


def _images(n=2):
    return ImageList(torch.zeros(n, 3, IMAGE, IMAGE), [(IMAGE, IMAGE)] * n)


def test_stages_use_seph_heads_predictors_and_stage_coders(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg), SHAPES)
    assert isinstance(heads, SephCascadeROIHeads) and heads.num_cascade_stages == 3
    assert all(isinstance(h, TwinTowerConvFCHead) for h in heads.box_head)
    assert all(isinstance(p, SephOutputLayers) for p in heads.box_predictor)
    weights = [tuple(p.box2box_transform.weights) for p in heads.box_predictor]
    assert weights == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert [m.thresholds[1] for m in heads.proposal_matchers] == [0.5, 0.6, 0.7]
    assert all(p.bbox_pred.out_features == 4 for p in heads.box_predictor)  # agnostic
    # separate parameters per stage
    assert heads.box_head[0].cls_tower is not heads.box_head[1].cls_tower


@pytest.mark.parametrize("iou_branch", [False, True])
def test_training_returns_one_loss_set_per_stage_and_backward_reaches_every_stage(iou_branch, sephnet_cfg):
    overrides = {"MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING": "square"}
    if iou_branch:
        overrides["MODEL.SEPH.IOU_BRANCH.ENABLED"] = True
    heads = build_roi_heads(_cfg(sephnet_cfg, **overrides), SHAPES).train()
    features = {k: v.requires_grad_() for k, v in _features().items()}
    with EventStorage():
        _, losses = heads(_images(), features, _proposals(), _targets())
    names = ["loss_cls", "loss_box_reg"] + (["loss_iou"] if iou_branch else [])
    assert set(losses) == {f"{n}_stage{k}" for n in names for k in range(3)}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for k in range(3):
        assert heads.box_predictor[k].cls_score.weight.grad.abs().sum() > 0
        assert heads.box_predictor[k].bbox_pred.weight.grad.abs().sum() > 0
    # boxes this small are all pooled from p3 (canonical level 4 / 224 px, clamped)
    assert features["p3"].grad is not None and features["p3"].grad.abs().sum() > 0


def _iou_loop(a, b):
    out = []
    for p, q in zip(a.tolist(), b.tolist()):
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - iw * ih
        out.append(iw * ih / union if union > 0 else 0.0)
    return torch.tensor(out)


def test_later_stages_carry_gt_ious_and_matcher_decision(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg), SHAPES).train()
    proposals = [Instances((IMAGE, IMAGE), proposal_boxes=p.proposal_boxes) for p in _proposals()]
    targets = _targets()
    empty = Instances((IMAGE, IMAGE))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    with EventStorage():
        labelled = heads._match_and_label_boxes(
            copy.deepcopy(proposals) + [copy.deepcopy(proposals[0])], 2, targets + [empty]
        )
    for p, t in zip(labelled[:2], targets):
        gt = t.gt_boxes.tensor
        full = torch.stack([_iou_loop(p.proposal_boxes.tensor, g.expand(len(p), 4)) for g in gt])
        best, _ = full.max(dim=0)
        assert torch.allclose(p.gt_ious, best, atol=1e-6)
        assert torch.equal(p.gt_is_matched, best >= 0.7)  # stage 2's IoU
        assert torch.equal(p.gt_is_matched, p.gt_classes < K)
    assert torch.equal(labelled[2].gt_ious, torch.zeros(len(labelled[2])))
    assert not labelled[2].gt_is_matched.any() and (labelled[2].gt_classes == K).all()


def _top1_by_loop(probs):
    out = torch.zeros_like(probs)
    out[:, -1] = probs[:, -1]
    for r in range(len(probs)):
        c = int(probs[r, :-1].argmax())
        out[r, c] = probs[r, c]
    return out


@pytest.mark.parametrize("classes_per_roi", ["all", "top1"])
def test_inference_averages_the_stage_probabilities(classes_per_roi, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{"MODEL.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST": classes_per_roi})
    heads = build_roi_heads(cfg, SHAPES).eval()
    # make the stages disagree so that the mean differs from any single stage
    for k, predictor in enumerate(heads.box_predictor):
        torch.nn.init.normal_(predictor.cls_score.weight, std=0.5 * (k + 1))
        torch.nn.init.normal_(predictor.bbox_pred.weight, std=0.05)
    features, proposals = _features(), _proposals()
    with torch.no_grad():
        results, _ = heads(_images(), features, copy.deepcopy(proposals))

        # recompute stage by stage through the module's own pooler, heads and predictors
        levels = [features[f] for f in heads.box_in_features]
        boxes = [p.proposal_boxes.tensor for p in proposals]
        stage_probs = []
        for k in range(3):
            if k > 0:
                boxes = [Boxes(b).clone() for b in boxes]
                for b in boxes:
                    b.clip((IMAGE, IMAGE))
                boxes = [b.tensor for b in boxes]
            props = [Instances((IMAGE, IMAGE), proposal_boxes=Boxes(b)) for b in boxes]
            x = heads.box_pooler(levels, [p.proposal_boxes for p in props])
            preds = heads.box_predictor[k](heads.box_head[k](x))
            logits = preds.class_logits.split([len(b) for b in boxes])
            stage_probs.append([lg.softmax(dim=1) for lg in logits])
            boxes = heads.box_predictor[k].predict_boxes(preds, props)
        mean = [(a + b + c) / 3 for a, b, c in zip(*stage_probs)]
        for single in stage_probs:
            assert not torch.allclose(single[0], mean[0], atol=1e-3)
        if classes_per_roi == "top1":
            mean = [_top1_by_loop(m) for m in mean]
        expected, _ = fast_rcnn_inference(
            list(boxes), mean, [(IMAGE, IMAGE)] * 2, 0.0, 0.5, 20
        )
    for got, want in zip(results, expected):
        assert len(got) == len(want) > 0
        assert torch.allclose(got.scores, want.scores, atol=1e-6)
        assert torch.allclose(got.pred_boxes.tensor, want.pred_boxes.tensor, atol=1e-4)
        assert torch.equal(got.pred_classes, want.pred_classes)


def test_cascade_config_errors_name_the_keys(sephnet_cfg):
    validate_sephnet_config(_cfg(sephnet_cfg))
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False}))
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        build_roi_heads(_cfg(sephnet_cfg, **{"MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False}), SHAPES)
    with pytest.raises(ValueError, match=r"IOUS\[0\]=0.4.*IOU_THRESHOLDS"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.ROI_BOX_CASCADE_HEAD.IOUS": (0.4, 0.6, 0.7)}))
    with pytest.raises(ValueError, match="BBOX_REG_WEIGHTS"):
        validate_sephnet_config(
            _cfg(sephnet_cfg, **{"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": ((10, 10, 5, 5),)})
        )
    with pytest.raises(ValueError, match="TEST_SCORE='rank'"):
        validate_sephnet_config(
            _cfg(sephnet_cfg,
                **{
                    "MODEL.SEPH.IOU_BRANCH.ENABLED": True,
                    "MODEL.SEPH.IOU_BRANCH.TEST_SCORE": "rank",
                }
            )
        )
    # Cascade1_1: (0.4, 0.6, 0.7) with ROI IOU_THRESHOLDS [0.4] is consistent
    validate_sephnet_config(
        _cfg(sephnet_cfg,
            **{
                "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": (0.4, 0.6, 0.7),
                "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.4],
            }
        )
    )
