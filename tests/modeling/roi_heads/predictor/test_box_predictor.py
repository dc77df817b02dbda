"""SephOutputLayers: losses by hand, label rules, IoU branch, inference, upstream compatibility."""

import math

import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import (
    Box2BoxTransform,
    Boxes,
    EventStorage,
    FastRCNNOutputLayers,
    Instances,
    ShapeSpec,
)
from sephnet.config import predictor as predictor_config
from sephnet.modeling.roi_heads.predictor.box_predictor import SephOutputLayers, SephPredictions
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures
from sephnet.modeling.roi_heads.predictor.iou_branch import IoUBranch

K = 3
SHAPES = {"cls": ShapeSpec(channels=8), "box": ShapeSpec(channels=4, height=2, width=2)}


@pytest.fixture
def storage():
    with EventStorage() as s:
        yield s


def make_predictor(output_shapes=SHAPES, iou=None, **kwargs):
    if iou is not None:
        shape = (
            output_shapes.get("iou", output_shapes["box"])
            if isinstance(output_shapes, dict)
            else output_shapes
        )
        iou = IoUBranch(shape.channels * (shape.height or 1) * (shape.width or 1), **iou)
    return SephOutputLayers(
        output_shapes,
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=K,
        iou_branch=iou,
        **kwargs,
    )


def features(r):
    return DecoupledFeatures(torch.randn(r, 8), torch.randn(r, 4, 2, 2))


def make_proposals(matched=True):
    """One image, 4 ROIs: two foreground (classes 0 and 2), two background."""
    p = Instances((40, 50))
    p.proposal_boxes = Boxes(
        torch.tensor([[0.0, 0, 10, 10], [10, 10, 30, 20], [5, 5, 9, 9], [20, 0, 40, 8]])
    )
    p.gt_boxes = Boxes(
        torch.tensor([[2.0, 0, 12, 10], [12, 10, 30, 24], [0, 0, 10, 10], [0, 0, 10, 10]])
    )
    p.gt_classes = torch.tensor([0, 2, K, K])
    p.gt_ious = torch.tensor([0.67, 0.55, 0.2, 0.0])
    if matched:
        p.gt_is_matched = torch.tensor([True, True, False, False])
    return p


def set_constant_deltas(predictor, deltas_per_class):
    """Make bbox_pred output the same deltas for every ROI (zero weights, bias = deltas)."""
    with torch.no_grad():
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.copy_(
            torch.tensor(deltas_per_class, dtype=torch.float32).flatten()
        )


# ------------------------------------------------------------------ upstream compatibility
def test_linear_state_dict_loads_into_fast_rcnn_output_layers_and_back():
    shape = ShapeSpec(channels=8)
    ours = make_predictor(shape)
    upstream = FastRCNNOutputLayers(
        shape, box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), num_classes=K
    )
    upstream.load_state_dict(ours.state_dict())  # strict: identical keys
    x = torch.randn(5, 8)
    logits, deltas = upstream(x)
    mine = ours(DecoupledFeatures(x, x))
    assert torch.allclose(mine.class_logits, logits) and torch.allclose(
        mine.proposal_deltas, deltas
    )
    assert mine.iou_pred is None

    other = make_predictor(shape)
    other.load_state_dict(upstream.state_dict())
    assert torch.allclose(other(x).class_logits, logits)  # a plain tensor feeds both branches


@pytest.mark.parametrize("loss_type,beta", [("smooth_l1", 0.0), ("smooth_l1", 1.0), ("giou", 0.0)])
def test_default_options_reproduce_fast_rcnn_output_layers_losses(storage, loss_type, beta):
    shape = ShapeSpec(channels=8)
    ours = make_predictor(
        shape, box_reg_loss_type=loss_type, smooth_l1_beta=beta, loss_weight={"loss_box_reg": 2.0}
    )
    upstream = FastRCNNOutputLayers(
        shape,
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=K,
        box_reg_loss_type=loss_type,
        smooth_l1_beta=beta,
        loss_weight={"loss_box_reg": 2.0},
    )
    upstream.load_state_dict(ours.state_dict())
    x = torch.randn(4, 8)
    proposals = [make_proposals(matched=False)]
    expected = upstream.losses(upstream(x), proposals)
    got = ours.losses(ours(x), proposals)
    assert set(got) == {"loss_cls", "loss_box_reg"}
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-6), key


# ------------------------------------------------------------------------------ box loss
@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou"])
def test_perfect_boxes_give_zero_box_loss(storage, loss_type):
    predictor = make_predictor(box_reg_loss_type=loss_type)
    set_constant_deltas(predictor, [[0.0] * 4] * K)
    p = make_proposals()
    p.gt_boxes = Boxes(p.proposal_boxes.tensor.clone())
    loss = predictor.losses(predictor(features(4)), [p])["loss_box_reg"]
    assert abs(float(loss)) < 1e-6


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_smooth_l1_box_loss_hand_value(storage, beta):
    # ROI 0 (class 0): proposal [0,0,10,10] -> gt [2,0,12,10]: target deltas (2, 0, 0, 0).
    # ROI 1 (class 2): proposal [10,10,30,20] -> gt [12,10,30,24]: target
    #   (10*(21-20)/20, 10*(17-15)/10, 5*log(18/20), 5*log(14/10)).
    # Predict (0,0,0,0) for class 0 and the ROI-1 target plus (0.5, 0, 0, 0) for class 2.
    t1 = [0.5, 2.0, 5 * math.log(18 / 20), 5 * math.log(14 / 10)]
    class2 = [t1[0] + 0.5] + t1[1:]
    predictor = make_predictor(smooth_l1_beta=beta)
    set_constant_deltas(predictor, [[0.0] * 4, [9.0] * 4, class2])
    loss = predictor.losses(predictor(features(4)), [make_proposals()])["loss_box_reg"]
    # ROI 0: error 2 -> L1 2 (beta 0) or 2 - 0.5 (beta 1); ROI 1: error 0.5 -> 0.5 or
    # 0.5 * 0.5^2; the background ROIs add nothing; the sum is divided by R = 4
    roi0 = 2.0 if beta == 0 else 1.5
    roi1 = 0.5 if beta == 0 else 0.5 * 0.5**2
    assert math.isclose(float(loss), (roi0 + roi1) / 4, rel_tol=1e-4)


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou"])
def test_bbox_reg_loss_weight_scales_box_loss_linearly(storage, loss_type):
    base = make_predictor(box_reg_loss_type=loss_type)
    x, proposals = features(4), [make_proposals()]
    reference = float(base.losses(base(x), proposals)["loss_box_reg"])
    assert reference > 0
    for weight in (4.0, 8.0, 12.0):  # the sephv15 multipliers
        scaled = make_predictor(box_reg_loss_type=loss_type, loss_weight={"loss_box_reg": weight})
        scaled.load_state_dict(base.state_dict())
        losses = scaled.losses(scaled(x), proposals)
        assert math.isclose(float(losses["loss_box_reg"]), weight * reference, rel_tol=1e-5)


def test_proposal_iou_weighted_giou_loss_hand_value(storage):
    predictor = make_predictor(box_reg_loss_type="giou", box_loss_weighting="proposal_iou")
    set_constant_deltas(predictor, [[0.0] * 4] * K)  # predicted boxes = proposals
    p = make_proposals()
    p.gt_ious = torch.tensor([0.67, 0.4, 0.2, 0.0])  # ROI 1 regresses with weight 0.4
    loss = predictor.losses(predictor(features(4)), [p])["loss_box_reg"]
    # ROI 0: [0,0,10,10] vs [2,0,12,10]: I = 80, U = 120, C = 120 -> GIoU 2/3, weight 1;
    # ROI 1: [10,10,30,20] vs [12,10,30,24]: GIoU 180/272 - 8/280, weight 0.4; / R = 4
    g1 = 180 / 272 - 8 / 280
    assert math.isclose(float(loss), ((1 - 2 / 3) + 0.4 * (1 - g1)) / 4, rel_tol=1e-4)
    with pytest.raises(ValueError, match="giou"):
        make_predictor(box_reg_loss_type="smooth_l1", box_loss_weighting="proposal_iou")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"box_reg_loss_type": "l2"}, "box_reg_loss_type"),
        ({"cls_layer": "arcface"}, "cls_layer"),
        ({"output_shapes": {"cls": ShapeSpec(channels=8)}}, "'box'"),
        ({"pos_labels_threshold": 1.0}, "pos_labels_threshold"),
        ({"classes_per_roi_test": "top2"}, "classes_per_roi_test"),
        ({"cls_loss_weighting": "cubic"}, "cubic"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_predictor(**kwargs)


def test_constructor_rejects_iou_branch_of_the_wrong_size():
    with pytest.raises(ValueError, match="iou_branch takes 7 features but the head gives 5"):
        SephOutputLayers(
            dict(SHAPES, iou=ShapeSpec(channels=5)),
            box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
            num_classes=K,
            iou_branch=IoUBranch(7),
        )


def test_matched_roi_without_its_class_is_an_error_for_class_specific_regression(storage):
    p = make_proposals()
    p.gt_classes = torch.tensor([0, K, K, K])  # ROI 1 is gt_is_matched but has no class
    predictor = make_predictor()
    with pytest.raises(ValueError, match="gt_is_matched"):
        predictor.losses(predictor(features(4)), [p])
    agnostic = make_predictor(cls_agnostic_bbox_reg=True)
    assert torch.isfinite(agnostic.losses(agnostic(features(4)), [p])["loss_box_reg"])


# -------------------------------------------------------------------- class loss / labels
def test_pos_labels_threshold_reclassifies_but_keeps_box_loss(storage):
    p = make_proposals()
    p.gt_ious = torch.tensor([0.67, 0.45, 0.2, 0.0])  # ROI 1: matched, IoU <= 0.5
    x = features(4)
    off = make_predictor()
    on = make_predictor(pos_labels_threshold=0.5)
    on.load_state_dict(off.state_dict())
    preds = on(x)
    losses_off, losses_on = off.losses(preds, [p]), on.losses(preds, [p])
    assert torch.allclose(
        losses_on["loss_cls"], F.cross_entropy(preds.class_logits, torch.tensor([0, K, K, K]))
    )
    assert torch.allclose(
        losses_off["loss_cls"], F.cross_entropy(preds.class_logits, torch.tensor([0, 2, K, K]))
    )
    assert float(losses_on["loss_box_reg"]) > 0
    assert torch.equal(losses_on["loss_box_reg"], losses_off["loss_box_reg"])
    # the classification labels reach the accuracy statistics too
    assert "fast_rcnn/cls_accuracy" in storage.latest()


@pytest.mark.parametrize(
    "mode,weights", [("square", [1.0, 0.25, 1.0, 1.0]), ("linear", [0.68, 0.2, 1.2, 2.0])]
)
def test_iou_weighted_class_loss(storage, mode, weights):
    predictor = make_predictor(cls_loss_weighting=mode, loss_weight={"loss_cls": 2.0})
    preds = predictor(features(4))
    loss = predictor.losses(preds, [make_proposals()])["loss_cls"]
    ce = F.cross_entropy(preds.class_logits, torch.tensor([0, 2, K, K]), reduction="none")
    expected = 2.0 * sum(w * float(c) for w, c in zip(weights, ce)) / 4
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


def test_missing_gt_ious_is_reported(storage):
    p = make_proposals()
    p.remove("gt_ious")
    predictor = make_predictor(cls_loss_weighting="square")
    with pytest.raises(ValueError, match="gt_ious"):
        predictor.losses(predictor(features(4)), [p])


# ---------------------------------------------------------------------------- IoU branch
def test_iou_branch_version1_target_is_giou_of_decoded_box(storage):
    predictor = make_predictor(iou={"version": 1, "neg_weight": 0.3}, loss_weight={"loss_iou": 2.0})
    set_constant_deltas(predictor, [[2.0, 0, 0, 0], [0.0] * 4, [0.0] * 4])
    with torch.no_grad():
        predictor.iou_branch.iou_pred.weight.zero_()
        predictor.iou_branch.iou_pred.bias.fill_(0.4)
    p = make_proposals()
    loss = predictor.losses(predictor(features(4)), [p])["loss_iou"]
    # ROI 0 (class 0, dx = 2/10 of its 10-px width) decodes to [2,0,12,10], exactly its gt;
    # ROI 1 (class 2, zero deltas) stays [10,10,30,20] vs gt [12,10,30,24]:
    # I = 18*10 = 180, U = 200 + 252 - 180 = 272, C = 20*14 = 280.
    g0 = 1.0
    g1 = 180 / 272 - (280 - 272) / 280
    assert math.isclose(g1, _giou([10.0, 10, 30, 20], [12.0, 10, 30, 24]))
    expected = (_focal(0.4, g0) + _focal(0.4, g1)) / 2 + 0.3 * _focal(0.4, 0.0)
    assert math.isclose(float(loss), 2.0 * expected, rel_tol=1e-5)


def _giou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def _focal(x, y):
    p = 1 / (1 + math.exp(-x))
    p_t = y * p + (1 - y) * (1 - p)
    bce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return (1 - p_t) ** 2 * (0.25 * y + 0.75 * (1 - y)) * bce


def test_iou_branch_reads_iou_features_else_box_features():
    shapes = dict(SHAPES, iou=ShapeSpec(channels=5))
    with_tower = make_predictor(shapes, iou={"version": 0})
    cls, box, iou = torch.randn(3, 8), torch.randn(3, 4, 2, 2), torch.randn(3, 5)
    a = with_tower(DecoupledFeatures(cls, box, iou)).iou_pred
    b = with_tower(DecoupledFeatures(cls, box * 3, iou)).iou_pred
    assert a.shape == (3, 1) and torch.equal(a, b)

    without = make_predictor(iou={"version": 0})
    assert without.iou_branch.iou_pred.in_features == 16
    out = without(DecoupledFeatures(cls, box)).iou_pred
    assert torch.allclose(out, without.iou_branch.iou_pred(box.flatten(1)))


# ------------------------------------------------------------------ all variants, empties
@pytest.mark.parametrize("cls_layer", ["linear", "cosine"])
@pytest.mark.parametrize("iou_version", [None, 0, 1, 3])
def test_losses_finite_and_backward(storage, cls_layer, iou_version):
    iou = None if iou_version is None else {"version": iou_version}
    predictor = make_predictor(
        iou=iou,
        cls_layer=cls_layer,
        cls_loss_weighting="square",
        box_reg_loss_type="giou",
        pos_labels_threshold=0.5,
    )
    x = features(4)
    x = DecoupledFeatures(x.cls.requires_grad_(True), x.box.requires_grad_(True))
    losses = predictor.losses(predictor(x), [make_proposals()])
    expected_keys = {"loss_cls", "loss_box_reg"} | ({"loss_iou"} if iou else set())
    assert set(losses) == expected_keys
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert x.cls.grad.abs().sum() > 0 and x.box.grad.abs().sum() > 0
    if cls_layer == "cosine":
        assert predictor.cls_score.weight.grad is not None
        assert not hasattr(predictor.cls_score, "bias")


@pytest.mark.parametrize("cls_layer", ["linear", "cosine"])
@pytest.mark.parametrize("iou_version", [None, 0, 1, 3, 4, 5])
@pytest.mark.parametrize("no_images", [False, True])
def test_empty_batch_gives_zero_losses_and_backward(storage, cls_layer, iou_version, no_images):
    iou = None if iou_version is None else {"version": iou_version}
    predictor = make_predictor(
        iou=iou, cls_layer=cls_layer, cls_loss_weighting="square", pos_labels_threshold=0.5
    )
    if no_images:
        proposals = []
    else:
        p = Instances((40, 50))
        p.proposal_boxes = Boxes(torch.zeros(0, 4))
        p.gt_boxes = Boxes(torch.zeros(0, 4))
        p.gt_classes = torch.zeros(0, dtype=torch.int64)
        p.gt_ious = torch.zeros(0)
        p.gt_is_matched = torch.zeros(0, dtype=torch.bool)
        proposals = [p]
    losses = predictor.losses(predictor(features(0)), proposals)
    assert all(float(v) == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    assert predictor.bbox_pred.weight.grad is not None


def test_image_without_gt_boxes_gives_zero_box_loss(storage):
    p = Instances((40, 50))
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]))
    p.gt_classes = torch.tensor([K, K])
    p.gt_ious = torch.zeros(2)
    predictor = make_predictor(iou={"version": 1}, cls_loss_weighting="square")
    losses = predictor.losses(predictor(features(2)), [p])
    assert float(losses["loss_box_reg"]) == 0.0
    assert float(losses["loss_cls"]) > 0
    assert torch.isfinite(losses["loss_iou"])


# ----------------------------------------------------------------------------- inference
def _image_proposals(n, size=(60, 80)):
    p = Instances(size)
    xy = torch.rand(n, 2) * 40
    p.proposal_boxes = Boxes(torch.cat([xy, xy + 5 + torch.rand(n, 2) * 20], dim=1))
    return p


@pytest.mark.parametrize("cls_layer", ["linear", "cosine"])
@pytest.mark.parametrize("test_score", [None, "off", "multiply", "rank"])
def test_inference_returns_at_most_topk_instances(cls_layer, test_score):
    iou = None if test_score is None else {"version": 0, "test_score": test_score}
    predictor = make_predictor(
        iou=iou, cls_layer=cls_layer, test_score_thresh=0.05, test_topk_per_image=7
    )
    predictor.eval()
    proposals = [_image_proposals(30), _image_proposals(0), _image_proposals(12, size=(30, 30))]
    with torch.no_grad():
        results, kept = predictor.inference(predictor(features(42)), proposals)
    assert len(results) == len(kept) == 3
    for result, keep, p in zip(results, kept, proposals):
        assert len(result) <= 7 and len(result) == len(keep)
        assert result.image_size == p.image_size
        assert set(result.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        assert bool((result.scores > 0.05).all())
        assert bool(((result.pred_classes >= 0) & (result.pred_classes < K)).all())
        boxes = result.pred_boxes.tensor
        h, w = p.image_size
        assert bool(
            (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()
        )
        assert bool((keep < len(p)).all())
    assert len(results[0]) > 0 and len(results[1]) == 0


def _fixed_predictions(logits, iou_pred, deltas=None):
    r = logits.shape[0]
    return SephPredictions(logits, torch.zeros(r, 4 * K) if deltas is None else deltas, iou_pred)


def test_multiply_score_fusion_is_monotonic_in_predicted_iou():
    predictor = make_predictor(iou={"version": 0, "test_score": "multiply"})
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0]]).repeat(6, 1)
    iou_logits = torch.linspace(-3, 3, 6)[:, None]
    probs = predictor.predict_probs(_fixed_predictions(logits, iou_logits), [_image_proposals(6)])[
        0
    ]
    assert torch.allclose(probs, logits.softmax(-1) * iou_logits.sigmoid())
    assert bool((probs[1:, :K] > probs[:-1, :K]).all())

    off = make_predictor(iou={"version": 0, "test_score": "off"})
    unfused = off.predict_probs(_fixed_predictions(logits, iou_logits), [_image_proposals(6)])[0]
    assert torch.allclose(unfused, logits.softmax(-1))


@pytest.mark.parametrize("version,multiplied", [(3, True), (0, False), (1, False), (4, False)])
def test_default_test_score_is_the_originals_rule_of_each_version(version, multiplied, sephnet_cfg):
    """Version 3 ("pred centerness") always multiplies sigmoid(output) into the class
    probabilities at test time; the other versions leave them alone, with default keys."""
    predictor = make_predictor(iou={"version": version})
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0]]).repeat(3, 1)
    iou_logits = torch.tensor([[-1.0], [0.0], [2.0]])
    probs = predictor.predict_probs(_fixed_predictions(logits, iou_logits), [_image_proposals(3)])
    expected = logits.softmax(-1) * (iou_logits.sigmoid() if multiplied else 1.0)
    torch.testing.assert_close(probs[0], expected)
    assert _cfg(sephnet_cfg).MODEL.SEPH.IOU_BRANCH.TEST_SCORE == "by_version"


def test_rank_score_orders_and_suppresses_by_predicted_iou_but_reports_probability():
    predictor = make_predictor(iou={"version": 0, "test_score": "rank"}, test_score_thresh=0.05)
    p = Instances((100, 100))
    # ROIs 0 and 1 overlap heavily (IoU 0.81); ROI 2 is apart
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]]))
    # only class 0 passes the 0.05 threshold (e.g. ROI 1's others: 1/(e^3 + 3) = 0.043)
    logits = torch.tensor([[5.0, 0, 0, 0], [3.0, 0, 0, 0], [3.0, 0, 0, 0]])
    iou_logits = torch.tensor([[-2.0], [2.0], [0.0]])
    result, keep = predictor.inference(_fixed_predictions(logits, iou_logits), [p])
    result, keep = result[0], keep[0]
    probs = logits.softmax(-1)
    # NMS keeps ROI 1 (higher IoU) over ROI 0 despite its
    # lower probability; order by predicted IoU: ROI 1 then ROI 2
    assert keep.tolist() == [1, 2]
    assert result.pred_classes.tolist() == [0, 0]
    assert torch.allclose(result.scores, probs[[1, 2], 0])
    # without ranking, the probability decides: ROI 0 suppresses ROI 1
    plain = make_predictor(iou={"version": 0, "test_score": "off"}, test_score_thresh=0.05)
    _, plain_keep = plain.inference(_fixed_predictions(logits, iou_logits), [p])
    assert plain_keep[0].tolist() == [0, 2]


def test_top1_keeps_one_class_per_roi():
    logits = torch.tensor([[1.0, 0.9, 0.8, -5.0]] * 4)  # three classes above threshold per ROI
    proposals = [_image_proposals(4)]
    every = make_predictor(test_score_thresh=0.05)
    top1 = make_predictor(test_score_thresh=0.05, classes_per_roi_test="top1")
    all_results, _ = every.inference(_fixed_predictions(logits, None), proposals)
    top_results, kept = top1.inference(_fixed_predictions(logits, None), proposals)
    assert len(all_results[0]) > len(top_results[0])
    assert len(set(kept[0].tolist())) == len(kept[0])
    assert set(top_results[0].pred_classes.tolist()) == {0}
    assert torch.allclose(top_results[0].scores, logits.softmax(-1)[kept[0], 0])


def test_predict_boxes_for_gt_classes_picks_the_gt_class_box():
    predictor = make_predictor()
    set_constant_deltas(predictor, [[2.0, 0, 0, 0], [0.0] * 4, [0.0, 2.0, 0, 0]])
    p = make_proposals()
    boxes = predictor.predict_boxes_for_gt_classes(predictor(features(4)), [p])[0]
    # class 0 shifts x by 2 px on a 10-px box; class 2 shifts y by 0.2 * 10 px on ROI 1;
    # background ROIs use the clamped class K-1 = 2
    assert torch.allclose(boxes[0], torch.tensor([2.0, 0, 12, 10]), atol=1e-4)
    assert torch.allclose(boxes[1], torch.tensor([10.0, 12, 30, 22]), atol=1e-4)


# -------------------------------------------------------------------------------- config
def _cfg(sephnet_cfg, **predictor_keys):
    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    return cfg


def test_from_config_builds_cosine_predictor_with_iou_branch(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    cfg.MODEL.SEPH.PREDICTOR.CLS_LAYER = "cosine"
    cfg.MODEL.SEPH.PREDICTOR.COSINE_SCALE = 10.0
    cfg.MODEL.SEPH.PREDICTOR.COSINE_SCALE_LEARNABLE = True
    cfg.MODEL.SEPH.IOU_BRANCH.ENABLED = True
    cfg.MODEL.SEPH.IOU_BRANCH.VERSION = 1
    cfg.MODEL.SEPH.IOU_BRANCH.NEG_WEIGHT = 0.3
    cfg.MODEL.SEPH.IOU_BRANCH.TEST_SCORE = "multiply"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 8.0
    predictor_config.validate_config(cfg)
    predictor = SephOutputLayers(cfg, dict(SHAPES, iou=ShapeSpec(channels=6)))
    assert predictor.cls_score.learnable_scale and predictor.cls_score.scale.item() == 10.0
    assert predictor.bbox_pred.out_features == 4
    assert predictor.iou_branch.iou_pred.in_features == 6
    assert (predictor.iou_branch.version, predictor.iou_branch.neg_weight) == (1, 0.3)
    assert predictor.loss_weight == {"loss_cls": 1.0, "loss_box_reg": 8.0, "loss_iou": 1.0}

    # a single-output head's ShapeSpec
    plain = SephOutputLayers(_cfg(sephnet_cfg), ShapeSpec(channels=8))
    assert plain.iou_branch is None and plain.bbox_pred.out_features == 4 * K


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("MODEL.SEPH.PREDICTOR.NAME", "NoSuchPredictor", "SephOutputLayers"),
        ("MODEL.SEPH.PREDICTOR.CLS_LAYER", "arcface", "CLS_LAYER"),
        ("MODEL.SEPH.PREDICTOR.COSINE_SCALE", 0.0, "COSINE_SCALE"),
        ("MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING", "cubic", "CLS_LOSS_WEIGHTING"),
        ("MODEL.SEPH.PREDICTOR.POS_LABELS_THRESHOLD", 1.5, "POS_LABELS_THRESHOLD"),
        ("MODEL.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST", "top2", "CLASSES_PER_ROI_TEST"),
        ("MODEL.SEPH.IOU_BRANCH.VERSION", 2, "VERSION"),
        ("MODEL.SEPH.IOU_BRANCH.TEST_SCORE", "sometimes", "TEST_SCORE"),
        ("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "l2", "BBOX_REG_LOSS_TYPE"),
        ("MODEL.SEPH.PREDICTOR.BOX_LOSS_WEIGHTING", "always", "BOX_LOSS_WEIGHTING"),
        ("MODEL.SEPH.PREDICTOR.BOX_LOSS_WEIGHTING", "proposal_iou", "'giou'"),
    ],
)
def test_validation_names_the_offending_key(key, value, match, sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    node = cfg
    *parents, leaf = key.split(".")
    for name in parents:
        node = node[name]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        predictor_config.validate_config(cfg)


def test_iou_test_score_needs_the_branch(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    cfg.MODEL.SEPH.IOU_BRANCH.TEST_SCORE = "rank"
    with pytest.raises(ValueError, match="ENABLED"):
        predictor_config.validate_config(cfg)
    cfg.MODEL.SEPH.IOU_BRANCH.ENABLED = True
    predictor_config.validate_config(cfg)


# ------------------------------------------- inside the backend's (unmodified) ROI heads
def _roi_head_inputs():
    features = {"p2": torch.randn(2, 8, 16, 16)}
    proposals, targets = [], []
    for n in (6, 4):
        p = Instances((64, 64))
        xy = torch.rand(n, 2) * 30
        p.proposal_boxes = Boxes(torch.cat([xy, xy + 8 + torch.rand(n, 2) * 20], dim=1))
        p.objectness_logits = torch.randn(n)
        proposals.append(p)
        t = Instances((64, 64))
        t.gt_boxes = Boxes(torch.tensor([[4.0, 4, 30, 30], [20, 10, 50, 40]]))
        t.gt_classes = torch.tensor([1, 2])
        targets.append(t)
    return features, proposals, targets


def _pooler():
    from sephnet.backend import ROIPooler

    return ROIPooler(output_size=7, scales=(0.25,), sampling_ratio=0, pooler_type="ROIAlignV2")


@pytest.mark.parametrize("cls_layer", ["linear", "cosine"])
def test_plugs_into_backend_standard_roi_heads(storage, cls_layer):
    from sephnet.backend import FastRCNNConvFCHead, Matcher, StandardROIHeads

    shape = ShapeSpec(channels=8, height=7, width=7)
    head = FastRCNNConvFCHead(shape, conv_dims=[], fc_dims=[16])
    roi_heads = StandardROIHeads(
        box_in_features=["p2"],
        box_pooler=_pooler(),
        box_head=head,
        box_predictor=make_predictor(head.output_shape, cls_layer=cls_layer),
        num_classes=K,
        batch_size_per_image=16,
        positive_fraction=0.25,
        proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
        train_on_pred_boxes=True,
    )
    features, proposals, targets = _roi_head_inputs()
    _, losses = roi_heads(None, features, proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    roi_heads.eval()
    with torch.no_grad():
        results, _ = roi_heads(None, features, proposals)
    assert len(results) == 2 and all(r.has("pred_boxes") and r.has("scores") for r in results)


def test_plugs_into_backend_cascade_roi_heads(storage):
    from sephnet.backend import CascadeROIHeads, FastRCNNConvFCHead, Matcher

    shape = ShapeSpec(channels=8, height=7, width=7)
    heads = [FastRCNNConvFCHead(shape, conv_dims=[], fc_dims=[16]) for _ in range(2)]
    # version 3 (centerness) needs no gt_ious, which the upstream cascade labelling lacks
    predictors = [
        make_predictor(
            h.output_shape,
            cls_agnostic_bbox_reg=True,
            iou={"version": 3, "test_score": "multiply"},
        )
        for h in heads
    ]
    roi_heads = CascadeROIHeads(
        box_in_features=["p2"],
        box_pooler=_pooler(),
        box_heads=heads,
        box_predictors=predictors,
        proposal_matchers=[
            Matcher([t], [0, 1], allow_low_quality_matches=False) for t in (0.5, 0.6)
        ],
        num_classes=K,
        batch_size_per_image=16,
        positive_fraction=0.25,
    )
    features, proposals, targets = _roi_head_inputs()
    _, losses = roi_heads(None, features, proposals, targets)
    assert set(losses) == {
        f"{k}_stage{s}" for k in ("loss_cls", "loss_box_reg", "loss_iou") for s in (0, 1)
    }
    assert all(torch.isfinite(v) for v in losses.values())
    roi_heads.eval()
    with torch.no_grad():
        results, _ = roi_heads(None, features, proposals)
    assert len(results) == 2 and all(r.has("pred_boxes") and r.has("scores") for r in results)
