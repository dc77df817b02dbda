"""CascadeROIHeads: structure, per-stage losses, stage matching and test-time score averaging."""
import pytest
import torch
from torch.nn import functional as F

from sephnet.d2.modeling.roi_heads.cascade_rcnn import CascadeROIHeads, _ScaleGradient
from sephnet.d2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from sephnet.d2.modeling.roi_heads.roi_heads import build_roi_heads
from sephnet.d2.structures import Boxes, Instances


@pytest.fixture
def cascade_cfg(tiny_cfg):
    tiny_cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    tiny_cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    return tiny_cfg


def _expected_keys():
    keys = {}
    for s in range(3):
        keys.update(
            {
                f"box_head.{s}.fc1.weight": (16, 8 * 7 * 7),
                f"box_head.{s}.fc1.bias": (16,),
                f"box_head.{s}.fc2.weight": (16, 16),
                f"box_head.{s}.fc2.bias": (16,),
                f"box_predictor.{s}.cls_score.weight": (4, 16),
                f"box_predictor.{s}.cls_score.bias": (4,),
                f"box_predictor.{s}.bbox_pred.weight": (4, 16),
                f"box_predictor.{s}.bbox_pred.bias": (4,),
            }
        )
    for name, shape in {
        "mask_fcn1.weight": (8, 8, 3, 3),
        "mask_fcn1.bias": (8,),
        "mask_fcn2.weight": (8, 8, 3, 3),
        "mask_fcn2.bias": (8,),
        "deconv.weight": (8, 8, 2, 2),
        "deconv.bias": (8,),
        "predictor.weight": (3, 8, 1, 1),
        "predictor.bias": (3,),
    }.items():
        keys[f"mask_head.{name}"] = shape
    return keys


def test_cascade_structure(cascade_cfg, fpn_shapes):
    heads = build_roi_heads(cascade_cfg, fpn_shapes)
    assert type(heads) is CascadeROIHeads and heads.num_cascade_stages == 3
    assert {k: tuple(v.shape) for k, v in heads.state_dict().items()} == _expected_keys()
    weights = [tuple(p.box2box_transform.weights) for p in heads.box_predictor]
    assert weights == [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
    assert [m.thresholds[1] for m in heads.proposal_matchers] == [0.5, 0.6, 0.7]
    assert heads.proposal_matcher is heads.proposal_matchers[0]


def test_cascade_config_errors(cascade_cfg, fpn_shapes):
    cascade_cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        build_roi_heads(cascade_cfg, fpn_shapes)
    cascade_cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cascade_cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6)
    with pytest.raises(ValueError, match="IOUS"):
        build_roi_heads(cascade_cfg, fpn_shapes)
    cascade_cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.4, 0.6, 0.7)
    with pytest.raises(ValueError, match="IOU_THRESHOLDS"):
        build_roi_heads(cascade_cfg, fpn_shapes)


def test_cascade_train_step_has_one_loss_set_per_stage(
    cascade_cfg, fpn_shapes, fpn_features, train_inputs, storage
):
    heads = build_roi_heads(cascade_cfg, fpn_shapes)
    proposals, targets = train_inputs
    _, losses = heads(None, fpn_features, proposals, targets)
    expected = {f"{n}_stage{s}" for n in ("loss_cls", "loss_box_reg") for s in range(3)}
    assert set(losses) == expected | {"loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for s in range(3):
        assert heads.box_head[s].fc1.weight.grad.abs().sum() > 0
    latest = storage.latest()
    for s in range(3):
        assert f"stage{s}/fast_rcnn/cls_accuracy" in latest
    assert "stage1/roi_head/num_fg_samples" in latest and "stage2/roi_head/num_bg_samples" in latest


def test_scale_gradient_is_identity_forward_and_scales_backward():
    x = torch.randn(3, 2, requires_grad=True)
    y = _ScaleGradient.apply(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(6.0).view(3, 2)).sum().backward()
    assert torch.allclose(x.grad, 0.25 * torch.arange(6.0).view(3, 2))


def test_match_and_label_boxes_uses_stage_threshold(cascade_cfg, fpn_shapes, make_targets, storage):
    heads = build_roi_heads(cascade_cfg, fpn_shapes)
    targets = make_targets([[([0.0, 0.0, 10.0, 10.0], 2)], []])
    a, b = Instances((64, 64)), Instances((64, 64))
    # IoU with the gt: 0.9 and 0.64
    a.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 8.0, 8.0]]))
    b.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 9.0]]))
    heads._match_and_label_boxes([a, b], 1, targets)  # threshold 0.6: both fg
    assert a.gt_classes.tolist() == [2, 2]
    heads._match_and_label_boxes([a, b], 2, targets)  # threshold 0.7: only the first
    assert a.gt_classes.tolist() == [2, 3]
    assert a.gt_boxes.tensor.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10]]
    assert b.gt_classes.tolist() == [3] and b.gt_boxes.tensor.tolist() == [[0, 0, 0, 0]]
    latest = storage.latest()
    assert latest["stage2/roi_head/num_fg_samples"][0] == pytest.approx(0.5)
    assert latest["stage2/roi_head/num_bg_samples"][0] == pytest.approx(1.0)


def test_create_proposals_clips_and_drops_empty_only_in_training(cascade_cfg, fpn_shapes):
    heads = build_roi_heads(cascade_cfg, fpn_shapes)
    boxes = [torch.tensor([[-5.0, 2.0, 70.0, 20.0], [80.0, 10.0, 90.0, 20.0]], requires_grad=True)]
    props = heads._create_proposals_from_boxes(boxes, [(64, 64)])
    # the second box clips to zero width and is dropped in training
    assert props[0].proposal_boxes.tensor.tolist() == [[0, 2, 64, 20]]
    assert not props[0].proposal_boxes.tensor.requires_grad
    heads.eval()
    props = heads._create_proposals_from_boxes(boxes, [(64, 64)])
    assert props[0].proposal_boxes.tensor.tolist() == [[0, 2, 64, 20], [64, 10, 64, 20]]


def test_cascade_inference_averages_stage_probabilities(
    cascade_cfg, fpn_shapes, fpn_features, train_inputs
):
    heads = build_roi_heads(cascade_cfg, fpn_shapes).eval()
    with torch.no_grad():  # make the stages disagree so the average is visible
        for p in heads.box_predictor:
            p.cls_score.weight.normal_(std=0.5)
            p.bbox_pred.weight.normal_(std=0.05)
    proposals, _ = train_inputs
    with torch.no_grad():
        results, _ = heads(None, fpn_features, proposals)

        # independent re-run of the cascade through the module's own pooler/heads/predictors
        levels = [fpn_features[f] for f in heads.box_in_features]
        boxes = [p.proposal_boxes.tensor for p in proposals]
        sizes = [len(b) for b in boxes]
        stage_probs = []
        for s in range(3):
            if s > 0:
                boxes = [b.clone() for b in boxes]
                for b in boxes:
                    b[:, 0::2] = b[:, 0::2].clamp(0, 64)
                    b[:, 1::2] = b[:, 1::2].clamp(0, 64)
            x = heads.box_pooler(levels, [Boxes(b) for b in boxes])
            logits, deltas = heads.box_predictor[s](heads.box_head[s](x))
            stage_probs.append(F.softmax(logits, dim=1))
            transform = heads.box_predictor[s].box2box_transform
            decoded = transform.apply_deltas(deltas, torch.cat(boxes))
            boxes = list(decoded.split(sizes))
        mean_probs = sum(stage_probs) / 3
        assert (mean_probs - stage_probs[-1]).abs().max() > 1e-2
        expected, _ = fast_rcnn_inference(
            boxes, list(mean_probs.split(sizes)), [(64, 64)] * 2, 0.0, 0.5, 100
        )
    for res, exp in zip(results, expected):
        assert len(res) == len(exp) > 0
        assert torch.allclose(res.scores, exp.scores, atol=1e-6)
        assert torch.equal(res.pred_classes, exp.pred_classes)
        assert torch.allclose(res.pred_boxes.tensor, exp.pred_boxes.tensor, atol=1e-4)
        assert res.pred_masks.shape == (len(res), 1, 14, 14)
