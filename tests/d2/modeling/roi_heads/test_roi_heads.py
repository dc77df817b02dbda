"""ROIHeads sampling, StandardROIHeads and Res5ROIHeads train/eval steps and state_dict names."""
import math

import pytest
import torch

from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.box_regression import Box2BoxTransform
from sephnet.d2.modeling.matcher import Matcher
from sephnet.d2.modeling.poolers import ROIPooler
from sephnet.d2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from sephnet.d2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from sephnet.d2.modeling.roi_heads.roi_heads import (
    ROI_HEADS_REGISTRY,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_roi_heads,
    select_foreground_proposals,
)
from sephnet.d2.structures import Boxes, Instances

GT = [([0.0, 0.0, 10.0, 10.0], 0), ([20.0, 20.0, 30.0, 30.0], 1)]
# IoU with the gt: 0.9 (gt 0), 0.81 (gt 1), 0, 0.16 (gt 0), 0.4 (gt 0)
PROPOSALS = [[0, 0, 10, 9], [21, 21, 30, 30], [40, 40, 50, 50], [0, 0, 4, 4], [0, 0, 10, 4]]


def _sampler(batch_size=512, fraction=0.25, append_gt=True, thresholds=(0.5,), labels=(0, 1)):
    return ROIHeads(
        num_classes=3,
        batch_size_per_image=batch_size,
        positive_fraction=fraction,
        proposal_matcher=Matcher(list(thresholds), list(labels), allow_low_quality_matches=False),
        proposal_append_gt=append_gt,
    )


def test_label_and_sample_counts_with_appended_gt(storage, make_targets, make_proposals):
    heads = _sampler()
    targets = make_targets([GT, []])
    proposals = make_proposals([PROPOSALS, PROPOSALS[:3]])
    sampled = heads.label_and_sample_proposals(proposals, targets)

    # image 0: 5 proposals + 2 gt boxes; fg = proposals 0, 1 and both gt boxes
    labels = sampled[0].gt_classes.tolist()
    assert len(sampled[0]) == 7
    assert sorted(labels[:4]) == [0, 0, 1, 1] and labels[4:] == [3, 3, 3]
    for box, label, gt_box in zip(
        sampled[0].proposal_boxes.tensor.tolist(), labels, sampled[0].gt_boxes.tensor.tolist()
    ):
        if label != 3:
            assert gt_box == GT[label][0]
            assert math.isclose(
                _iou(box, gt_box), max(_iou(box, g) for g, _ in GT), rel_tol=1e-6
            )
    # gt_masks travel with the matched gt
    fg = sampled[0][sampled[0].gt_classes < 3]
    assert torch.equal(fg.gt_masks.tensor.flatten(1).any(1), torch.ones(4, dtype=torch.bool))
    # image 1 has no gt: everything is background and there are no gt_boxes to copy
    assert sampled[1].gt_classes.tolist() == [3, 3, 3] and not sampled[1].has("gt_boxes")

    latest = storage.latest()
    assert latest["roi_head/num_fg_samples"][0] == pytest.approx((4 + 0) / 2)
    assert latest["roi_head/num_bg_samples"][0] == pytest.approx((3 + 3) / 2)


def test_label_and_sample_without_appended_gt_and_small_batch(
    storage, make_targets, make_proposals
):
    targets = make_targets([GT])
    heads = _sampler(append_gt=False)
    sampled = heads.label_and_sample_proposals(make_proposals([PROPOSALS]), targets)
    assert sorted(sampled[0].gt_classes.tolist()) == [0, 1, 3, 3, 3]

    # 4 per image, at most 25% fg -> 1 fg and 3 bg
    heads = _sampler(batch_size=4)
    sampled = heads.label_and_sample_proposals(make_proposals([PROPOSALS]), targets)
    labels = sampled[0].gt_classes.tolist()
    assert len(labels) == 4 and labels[0] in (0, 1) and labels[1:] == [3, 3, 3]


def test_ignored_proposals_are_never_sampled(storage, make_targets, make_proposals):
    # IoU in [0.3, 0.5) is ignored: proposal 4 (IoU 0.4) must not appear
    heads = _sampler(append_gt=False, thresholds=(0.3, 0.5), labels=(0, -1, 1))
    sampled = heads.label_and_sample_proposals(make_proposals([PROPOSALS]), make_targets([GT]))
    assert sorted(sampled[0].gt_classes.tolist()) == [0, 1, 3, 3]
    assert [0, 0, 10, 4] not in sampled[0].proposal_boxes.tensor.tolist()


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_select_foreground_proposals():
    inst = Instances((10, 10))
    inst.gt_classes = torch.tensor([0, 3, -1, 2])
    selected, masks = select_foreground_proposals([inst], bg_label=3)
    assert selected[0].gt_classes.tolist() == [0, 2]
    assert masks[0].tolist() == [True, False, False, True]
    with pytest.raises(ValueError):
        select_foreground_proposals([], bg_label=3)


STANDARD_KEYS = {
    "box_head.fc1.weight": (16, 8 * 7 * 7),
    "box_head.fc1.bias": (16,),
    "box_head.fc2.weight": (16, 16),
    "box_head.fc2.bias": (16,),
    "box_predictor.cls_score.weight": (4, 16),
    "box_predictor.cls_score.bias": (4,),
    "box_predictor.bbox_pred.weight": (12, 16),
    "box_predictor.bbox_pred.bias": (12,),
    "mask_head.mask_fcn1.weight": (8, 8, 3, 3),
    "mask_head.mask_fcn1.bias": (8,),
    "mask_head.mask_fcn2.weight": (8, 8, 3, 3),
    "mask_head.mask_fcn2.bias": (8,),
    "mask_head.deconv.weight": (8, 8, 2, 2),
    "mask_head.deconv.bias": (8,),
    "mask_head.predictor.weight": (3, 8, 1, 1),
    "mask_head.predictor.bias": (3,),
}


def test_standard_roi_heads_structure(tiny_cfg, fpn_shapes):
    heads = build_roi_heads(tiny_cfg, fpn_shapes)
    assert type(heads) is StandardROIHeads
    assert {k: tuple(v.shape) for k, v in heads.state_dict().items()} == STANDARD_KEYS
    assert heads.box_in_features == heads.in_features == ["p2", "p3"]
    assert heads.mask_in_features == ["p2", "p3"] and heads.mask_on and not heads.keypoint_on
    assert heads.box_predictor.test_score_thresh == 0.0
    assert heads.proposal_matcher is not None and heads.batch_size_per_image == 16


def test_standard_roi_heads_train_step(tiny_cfg, fpn_shapes, fpn_features, train_inputs, storage):
    heads = build_roi_heads(tiny_cfg, fpn_shapes)
    heads.train()
    proposals, targets = train_inputs
    sampled, losses = heads(None, fpn_features, proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_box_reg"].item() > 0 and losses["loss_mask"].item() > 0
    sum(losses.values()).backward()
    assert heads.box_head.fc1.weight.grad.abs().sum() > 0
    assert heads.mask_head.predictor.weight.grad.abs().sum() > 0
    assert [len(s) for s in sampled] == [7, 3]  # 5 + 2 gt boxes, and 3 (no gt)
    assert "fast_rcnn/cls_accuracy" in storage.latest() and "mask_rcnn/accuracy" in storage.latest()


def test_standard_roi_heads_without_gt_has_zero_box_and_mask_loss(
    tiny_cfg, fpn_shapes, fpn_features, make_targets, make_proposals, storage
):
    heads = build_roi_heads(tiny_cfg, fpn_shapes)
    proposals = make_proposals([[[2, 2, 30, 30], [20, 20, 50, 60]], [[33, 5, 63, 25]]])
    _, losses = heads(None, fpn_features, proposals, make_targets([[], []]))
    assert losses["loss_box_reg"].item() == 0 and losses["loss_mask"].item() == 0
    assert losses["loss_cls"].item() > 0
    with pytest.raises(ValueError, match="targets"):
        heads(None, fpn_features, proposals, None)


def test_standard_roi_heads_eval(tiny_cfg, fpn_shapes, fpn_features, train_inputs):
    heads = build_roi_heads(tiny_cfg, fpn_shapes).eval()
    proposals, _ = train_inputs
    with torch.no_grad():
        results, losses = heads(None, fpn_features, proposals)
    assert losses == {} and len(results) == 2
    for res, props in zip(results, proposals):
        assert res.image_size == props.image_size
        assert len(res) > 0
        assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(res.get_fields())
        assert res.pred_masks.shape == (len(res), 1, 14, 14)
        assert torch.all(res.pred_masks >= 0) and torch.all(res.pred_masks <= 1)
        assert torch.all(res.pred_classes < 3) and torch.all(res.scores[:-1] >= res.scores[1:])

    # the mask branch only depends on the given boxes: forward_with_given_boxes agrees
    given = Instances(results[0].image_size)
    given.pred_boxes = Boxes(results[0].pred_boxes.tensor.clone())
    given.pred_classes = results[0].pred_classes.clone()
    single = {k: v[:1] for k, v in fpn_features.items()}
    with torch.no_grad():
        again = heads.forward_with_given_boxes(single, [given])
    assert torch.allclose(again[0].pred_masks, results[0].pred_masks, atol=1e-6)


def test_standard_roi_heads_image_without_proposals(
    tiny_cfg, fpn_shapes, fpn_features, train_inputs, storage
):
    heads = build_roi_heads(tiny_cfg, fpn_shapes)
    proposals, targets = train_inputs
    proposals = [proposals[0], proposals[1][torch.zeros(0, dtype=torch.long)]]
    sampled, losses = heads(None, fpn_features, proposals, targets)
    assert len(sampled[1]) == 0 and all(torch.isfinite(v) for v in losses.values())
    heads.eval()
    with torch.no_grad():
        results, _ = heads(None, fpn_features, proposals)
    assert len(results[0]) > 0 and len(results[1]) == 0
    assert results[1].pred_masks.shape == (0, 1, 14, 14)


def test_train_on_pred_boxes_replaces_proposal_boxes(
    tiny_cfg, fpn_shapes, fpn_features, train_inputs, storage
):
    tiny_cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    heads = build_roi_heads(tiny_cfg, fpn_shapes)
    with torch.no_grad():
        heads.box_predictor.bbox_pred.weight.zero_()
        heads.box_predictor.bbox_pred.bias.fill_(0.5)
    proposals, targets = train_inputs
    sampled = heads.label_and_sample_proposals(proposals, targets)
    before = [s.proposal_boxes.tensor.clone() for s in sampled]
    heads._forward_box(fpn_features, sampled)
    # raw deltas 0.5 over weights (10, 10, 5, 5): shift by 0.05 box sizes, scale by exp(0.1)
    for b0, s in zip(before, sampled):
        w, h = b0[:, 2] - b0[:, 0], b0[:, 3] - b0[:, 1]
        new = s.proposal_boxes.tensor
        assert torch.allclose(new[:, 2] - new[:, 0], w * math.exp(0.1), rtol=1e-5)
        assert torch.allclose(new[:, 3] - new[:, 1], h * math.exp(0.1), rtol=1e-5)
        centre_x = (b0[:, 0] + b0[:, 2]) / 2 + 0.05 * w
        assert torch.allclose((new[:, 0] + new[:, 2]) / 2, centre_x, rtol=1e-5)


def test_standard_roi_heads_built_without_config(fpn_features, train_inputs, storage):
    head = FastRCNNConvFCHead(ShapeSpec(channels=8, height=7, width=7), conv_dims=[], fc_dims=[16])
    heads = StandardROIHeads(
        num_classes=3,
        batch_size_per_image=8,
        positive_fraction=0.5,
        proposal_matcher=Matcher([0.5], [0, 1]),
        box_in_features=["p3"],
        box_pooler=ROIPooler(7, (1.0 / 8,), 0, "ROIAlignV2"),
        box_head=head,
        box_predictor=FastRCNNOutputLayers(
            head.output_shape, box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
            num_classes=3,
        ),
    )
    assert not heads.mask_on and set(heads.state_dict()) == {
        "box_head.fc1.weight", "box_head.fc1.bias",
        "box_predictor.cls_score.weight", "box_predictor.cls_score.bias",
        "box_predictor.bbox_pred.weight", "box_predictor.bbox_pred.bias",
    }
    proposals, targets = train_inputs
    sampled, losses = heads(None, fpn_features, proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(len(s) <= 8 for s in sampled)
    heads.eval()
    results, _ = heads(None, fpn_features, proposals)
    assert not results[0].has("pred_masks") and len(results[0]) > 0
    with pytest.raises(NotImplementedError, match="keypoint"):
        StandardROIHeads(
            num_classes=3, batch_size_per_image=8, positive_fraction=0.5,
            proposal_matcher=Matcher([0.5], [0, 1]), box_in_features=["p3"],
            box_pooler=heads.box_pooler, box_head=head, box_predictor=heads.box_predictor,
            keypoint_in_features=["p3"],
        )


def test_keypoints_are_rejected(tiny_cfg, fpn_shapes):
    tiny_cfg.MODEL.KEYPOINT_ON = True
    with pytest.raises(NotImplementedError, match="KEYPOINT_ON"):
        build_roi_heads(tiny_cfg, fpn_shapes)


def test_mismatched_channels_rejected(tiny_cfg):
    shapes = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=16, stride=8)}
    with pytest.raises(ValueError, match="channel"):
        build_roi_heads(tiny_cfg, shapes)


@pytest.fixture
def res5_cfg(tiny_cfg):
    cfg = tiny_cfg
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 6
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 8  # res5: 32 -> 64 channels
    cfg.MODEL.RESNETS.NUM_GROUPS = 1
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 2  # bottleneck 16
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
    return cfg


RES5_SHAPES = {"res4": ShapeSpec(channels=32, stride=16)}


def _res5_expected_keys():
    keys = {}

    def conv(prefix, out_c, in_c, k):
        keys[f"{prefix}.weight"] = (out_c, in_c, k, k)
        for buf in ("weight", "bias", "running_mean", "running_var"):  # FrozenBatchNorm2d
            keys[f"{prefix}.norm.{buf}"] = (out_c,)

    for block in range(3):
        in_c = 32 if block == 0 else 64
        conv(f"res5.{block}.conv1", 16, in_c, 1)
        conv(f"res5.{block}.conv2", 16, 16, 3)
        conv(f"res5.{block}.conv3", 64, 16, 1)
    conv("res5.0.shortcut", 64, 32, 1)
    keys.update(
        {
            "box_predictor.cls_score.weight": (4, 64),
            "box_predictor.cls_score.bias": (4,),
            "box_predictor.bbox_pred.weight": (12, 64),
            "box_predictor.bbox_pred.bias": (12,),
            "mask_head.deconv.weight": (64, 8, 2, 2),
            "mask_head.deconv.bias": (8,),
            "mask_head.predictor.weight": (3, 8, 1, 1),
            "mask_head.predictor.bias": (3,),
        }
    )
    return keys


def test_res5_roi_heads_structure(res5_cfg):
    heads = build_roi_heads(res5_cfg, RES5_SHAPES)
    assert type(heads) is Res5ROIHeads
    assert {k: tuple(v.shape) for k, v in heads.state_dict().items()} == _res5_expected_keys()
    assert heads.res5[0].conv1.stride == (2, 2)  # STRIDE_IN_1X1 default True


def test_res5_roi_heads_train_and_eval(res5_cfg, train_inputs, storage):
    heads = build_roi_heads(res5_cfg, RES5_SHAPES)
    features = {"res4": torch.randn(2, 32, 4, 4)}
    proposals, targets = train_inputs
    out, losses = heads(None, features, proposals, targets)
    assert out == [] and set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert heads.res5[0].conv1.weight.grad.abs().sum() > 0

    heads.eval()
    with torch.no_grad():
        results, _ = heads(None, features, proposals)
    for res in results:
        assert len(res) > 0 and res.pred_masks.shape == (len(res), 1, 6, 6)
        assert {"pred_boxes", "scores", "pred_classes"} <= set(res.get_fields())


def test_res5_requires_single_feature(res5_cfg):
    res5_cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4", "res3"]
    shapes = dict(RES5_SHAPES, res3=ShapeSpec(channels=16, stride=8))
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_roi_heads(res5_cfg, shapes)


def test_registry_contents():
    for name in ("StandardROIHeads", "Res5ROIHeads", "CascadeROIHeads"):
        assert name in ROI_HEADS_REGISTRY
