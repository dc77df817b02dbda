"""FastRCNNOutputLayers and fast_rcnn_inference on hand-made inputs with hand-computed results."""
import math

import pytest
import torch

from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.box_regression import Box2BoxTransform
from sephnet.d2.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    fast_rcnn_inference,
    fast_rcnn_inference_single_image,
)
from sephnet.d2.structures import Boxes, Instances

NAN = float("nan")


def _crafted_image():
    """Four regions, 2 classes, class-specific boxes; image (h=16, w=20).

    row 0: NaN box (dropped), row 1..3 become rows 0..2 after the drop.
    """
    boxes = torch.tensor(
        [
            [NAN, 0, 1, 1, 0, 0, 1, 1],
            [0, 0, 10, 10, 0, 0, 10, 10],  # same box for both classes
            [1, 0, 11, 10, 10, 10, 15, 15],  # class 0 box has IoU 90/110 with row 1's
            [-5, -5, 30, 30, 2, 2, 4, 4],  # class 0 box sticks out of the image
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor(
        [
            [0.75, 0.125, 0.125],
            [0.5, 0.25, 0.25],
            [0.375, 0.125, 0.5],
            [0.0625, 0.0625, 0.875],
        ]
    )
    return boxes, scores, (16, 20)


def test_inference_threshold_per_class_nms_and_kept_indices():
    boxes, scores, shape = _crafted_image()
    result, kept = fast_rcnn_inference_single_image(boxes, scores, shape, 0.125, 0.5, 100)
    # Candidates above 0.125: (r1,c0,.5), (r1,c1,.25), (r2,c0,.375); r2's class-1 score equals
    # the threshold and is dropped. NMS removes (r2,c0) (IoU 0.82 with (r1,c0)) but keeps
    # (r1,c1) although it is the very same box, because it has another class.
    assert result.scores.tolist() == [0.5, 0.25]
    assert result.pred_classes.tolist() == [0, 1]
    assert result.pred_boxes.tensor.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10]]
    # indices count rows after the non-finite row was dropped (detectron2 semantics)
    assert kept.tolist() == [0, 0]
    assert result.image_size == shape
    assert kept.dtype == torch.int64 and result.pred_classes.dtype == torch.int64


def test_inference_nms_threshold_above_overlap_keeps_both():
    boxes, scores, shape = _crafted_image()
    result, kept = fast_rcnn_inference_single_image(boxes, scores, shape, 0.125, 0.9, 100)
    assert result.scores.tolist() == [0.5, 0.375, 0.25]
    assert result.pred_classes.tolist() == [0, 0, 1]
    assert kept.tolist() == [0, 1, 0]


def test_inference_topk_and_clipping():
    boxes, scores, shape = _crafted_image()
    result, kept = fast_rcnn_inference_single_image(boxes, scores, shape, 0.0, 0.5, 1)
    assert len(result) == 1 and result.scores.tolist() == [0.5]

    result, kept = fast_rcnn_inference_single_image(boxes, scores, shape, 0.0, 0.5, -1)
    # threshold 0 lets row 3 (now row 2) in; its class-0 box is clipped to (w=20, h=16)
    # Class 0: .5 (r0), .375 (r1, suppressed by r0), .0625 (r2, IoU with r0 = 100/320).
    # Class 1: .25 (r0), .125 (r1), .0625 (r2), pairwise disjoint or IoU < .5.
    assert result.scores.tolist() == [0.5, 0.25, 0.125, 0.0625, 0.0625]
    rows = zip(result.pred_boxes.tensor.tolist(), result.pred_classes.tolist(), kept.tolist())
    assert [box for box, c, k in rows if (k, c) == (2, 0)] == [[0, 0, 20, 16]]
    pairs = set(zip(kept.tolist(), result.pred_classes.tolist()))
    assert pairs == {(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)}


def test_inference_drops_non_finite_scores_and_class_agnostic_boxes():
    boxes = torch.tensor([[0, 0, 8, 8], [0, 0, 8, 8], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([[float("inf"), 0.0, 0.0], [0.5, 0.25, 0.25], [0.125, 0.625, 0.25]])
    result, kept = fast_rcnn_inference_single_image(boxes, scores, (40, 40), 0.1, 0.5, 10)
    # class-agnostic: every class of a region shares its box; NMS is still per class
    assert result.scores.tolist() == [0.625, 0.5, 0.25, 0.125]
    assert result.pred_classes.tolist() == [1, 0, 1, 0]
    assert kept.tolist() == [1, 0, 0, 1]
    assert result.pred_boxes.tensor[0].tolist() == [20, 20, 30, 30]


def test_inference_batches_images_independently():
    boxes, scores, shape = _crafted_image()
    results, kept = fast_rcnn_inference(
        [boxes, boxes[1:2]], [scores, scores[1:2]], [shape, (8, 8)], 0.125, 0.5, 100
    )
    assert len(results) == 2 and len(kept) == 2
    assert results[0].scores.tolist() == [0.5, 0.25]
    assert results[1].image_size == (8, 8)
    assert results[1].pred_boxes.tensor.tolist() == [[0, 0, 8, 8], [0, 0, 8, 8]]


def test_inference_empty_input():
    result, kept = fast_rcnn_inference_single_image(
        torch.zeros(0, 8), torch.zeros(0, 3), (10, 10), 0.05, 0.5, 100
    )
    assert len(result) == 0 and kept.numel() == 0
    assert result.pred_boxes.tensor.shape == (0, 4)


def _predictor(**kwargs):
    args = dict(
        input_shape=ShapeSpec(channels=4),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=2,
    )
    args.update(kwargs)
    predictor = FastRCNNOutputLayers(**args)
    with torch.no_grad():
        predictor.cls_score.weight.zero_()
        predictor.bbox_pred.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    return predictor


def _proposals(boxes, gt_boxes, gt_classes, image_size=(50, 50)):
    inst = Instances(image_size)
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    if gt_boxes is not None:
        inst.gt_boxes = Boxes(torch.tensor(gt_boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(gt_classes, dtype=torch.int64)
    return inst


def test_predictor_layers_shapes_and_init():
    p = FastRCNNOutputLayers(
        ShapeSpec(channels=4, height=2, width=3),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=5,
    )
    assert p.cls_score.weight.shape == (6, 24) and p.bbox_pred.weight.shape == (20, 24)
    assert torch.all(p.cls_score.bias == 0) and torch.all(p.bbox_pred.bias == 0)
    assert 0.005 < p.cls_score.weight.std() < 0.015
    assert 0.0005 < p.bbox_pred.weight.std() < 0.0015
    logits, deltas = p(torch.randn(7, 4, 2, 3))
    assert logits.shape == (7, 6) and deltas.shape == (7, 20)
    agnostic = FastRCNNOutputLayers(
        8, box2box_transform=Box2BoxTransform((1.0, 1.0, 1.0, 1.0)), num_classes=5,
        cls_agnostic_bbox_reg=True,
    )
    assert agnostic.bbox_pred.weight.shape == (4, 8)
    assert agnostic.loss_weight == {"loss_cls": 1.0, "loss_box_reg": 1.0}


def test_losses_hand_computed(storage):
    predictor = _predictor()
    with torch.no_grad():
        # class-specific deltas: class 1's slot predicts exactly the (1, 1, 0, 0) offset, class
        # 0's slot predicts nonsense that must not be used for a class-1 region
        predictor.bbox_pred.bias.copy_(torch.tensor([5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 0.0, 0.0]))
    props = [
        _proposals(
            [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15]],
            [[1, 1, 11, 11], [1, 1, 11, 11], [0, 0, 1, 1], [5, 5, 15, 15]],
            [1, 2, 2, 0],
        )
    ]
    x = torch.randn(4, 4)
    losses = predictor.losses(predictor(x), props)

    lse = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    expected_cls = sum(lse - z for z in (2.0, 3.0, 3.0, 1.0)) / 4
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-6)
    # region 0 (class 1): deltas exactly right -> 0; region 3 (class 0): gt deltas are 0, the
    # class-0 slot predicts (5,5,5,5) -> L1 = 20. Normalised by all 4 regions.
    assert losses["loss_box_reg"].item() == pytest.approx(20.0 / 4, rel=1e-6)

    latest = storage.latest()
    # all regions are predicted as background (logit 3 is largest)
    assert latest["fast_rcnn/cls_accuracy"][0] == pytest.approx(0.5)
    assert latest["fast_rcnn/fg_cls_accuracy"][0] == 0.0
    assert latest["fast_rcnn/false_negative"][0] == 1.0


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou"])
def test_box_loss_zero_when_proposals_equal_gt(storage, loss_type):
    predictor = _predictor(box_reg_loss_type=loss_type, cls_agnostic_bbox_reg=True)
    boxes = [[0, 0, 10, 10], [3, 4, 20, 30]]
    props = [_proposals(boxes, boxes, [0, 1])]
    losses = predictor.losses(predictor(torch.randn(2, 4)), props)
    assert losses["loss_box_reg"].item() == pytest.approx(0.0, abs=1e-6)


def test_giou_and_smooth_l1_hand_computed(storage):
    # proposal [0,0,10,10] with zero deltas vs gt [0,0,20,10]: IoU 0.5, enclosing box = gt, so
    # GIoU = IoU = 0.5 and the loss is 0.5 (over 2 regions -> 0.25).
    # smooth_l1 beta=0: gt deltas (10*0.5, 0, 5*log 2, 0) -> L1 = 5 + 5 log 2.
    props = [_proposals([[0, 0, 10, 10], [0, 0, 5, 5]], [[0, 0, 20, 10], [0, 0, 5, 5]], [0, 2])]
    giou = _predictor(box_reg_loss_type="giou")
    loss = giou.losses(giou(torch.randn(2, 4)), props)["loss_box_reg"]
    assert loss.item() == pytest.approx(0.25, rel=1e-5)
    l1 = _predictor()
    expected = (5.0 + 5.0 * math.log(2.0)) / 2
    loss = l1.losses(l1(torch.randn(2, 4)), props)["loss_box_reg"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    huber = _predictor(smooth_l1_beta=10.0)
    # beta 10: |5| -> 0.5*25/10, |5 log 2| -> 0.5*(5 log 2)^2/10
    expected = (1.25 + 0.05 * (5 * math.log(2.0)) ** 2) / 2
    loss = huber.losses(huber(torch.randn(2, 4)), props)["loss_box_reg"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_weights_and_image_without_gt(storage):
    predictor = _predictor(loss_weight={"loss_box_reg": 3.0})
    props = [
        _proposals([[0, 0, 10, 10]], [[0, 0, 20, 10]], [1]),
        _proposals([[0, 0, 4, 4], [1, 1, 5, 5]], None, [2, 2]),  # no gt: all background
    ]
    losses = predictor.losses(predictor(torch.randn(3, 4)), props)
    lse = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    assert losses["loss_cls"].item() == pytest.approx((lse - 2 + 2 * (lse - 3)) / 3, rel=1e-6)
    # image 0's only region: gt deltas (5, 0, 5 log 2, 0) against zero deltas; 3 regions in all
    expected_box = 3.0 * (5.0 + 5.0 * math.log(2.0)) / 3
    assert losses["loss_box_reg"].item() == pytest.approx(expected_box, rel=1e-5)

    scaled = _predictor(loss_weight=2.0)
    base = _predictor()
    x = torch.randn(3, 4)
    a, b = scaled.losses(scaled(x), props), base.losses(base(x), props)
    for key in ("loss_cls", "loss_box_reg"):
        assert a[key].item() == pytest.approx(2 * b[key].item(), rel=1e-6)


def test_empty_proposals_give_zero_losses_and_backward(storage):
    predictor = _predictor()
    x = torch.zeros(0, 4, requires_grad=True)
    for proposals in ([], [_proposals(torch.zeros(0, 4).tolist(), None, [])]):
        losses = predictor.losses(predictor(x), proposals)
        assert losses["loss_cls"].item() == 0 and losses["loss_box_reg"].item() == 0
        sum(losses.values()).backward()
        assert predictor.cls_score.weight.grad is not None


def test_invalid_box_loss_type_raises(storage):
    predictor = _predictor(box_reg_loss_type="l2")
    props = [_proposals([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0])]
    with pytest.raises(ValueError, match="l2"):
        predictor.losses(predictor(torch.randn(1, 4)), props)


def test_predict_boxes_probs_and_gt_class_boxes():
    predictor = _predictor()
    with torch.no_grad():
        # class 0's slot predicts dx = 10, i.e. 10 / weight 10 = one box width to the right
        predictor.bbox_pred.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    props = [
        _proposals([[0, 0, 10, 10], [10, 10, 30, 20]], None, [0, 2]),
        _proposals([[0, 0, 4, 4]], None, [1], image_size=(8, 8)),
    ]
    preds = predictor(torch.randn(3, 4))
    boxes = predictor.predict_boxes(preds, props)
    assert boxes[0].tolist() == [[10, 0, 20, 10, 0, 0, 10, 10], [30, 10, 50, 20, 10, 10, 30, 20]]
    assert boxes[1].tolist() == [[4, 0, 8, 4, 0, 0, 4, 4]]
    probs = predictor.predict_probs(preds, props)
    z = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(probs[0], z.softmax(0).expand(2, 3))
    assert [p.shape[0] for p in probs] == [2, 1]
    per_gt = predictor.predict_boxes_for_gt_classes(preds, props)
    # background label 2 is clamped to the last class (1)
    assert per_gt[0].tolist() == [[10, 0, 20, 10], [10, 10, 30, 20]]
    assert per_gt[1].tolist() == [[0, 0, 4, 4]]
    assert predictor.predict_boxes(preds, []) == []
    assert predictor.predict_boxes_for_gt_classes(preds, []) == []


def test_predictor_inference_uses_test_settings():
    predictor = _predictor(test_score_thresh=0.3, test_topk_per_image=1)
    props = [_proposals([[0, 0, 10, 10], [20, 20, 30, 30]], None, [0, 0])]
    instances, kept = predictor.inference(predictor(torch.randn(2, 4)), props)
    # softmax(1, 2, 3) = (.090, .245, .665): no foreground score passes 0.3
    assert len(instances[0]) == 0
    predictor.test_score_thresh = 0.2
    instances, kept = predictor.inference(predictor(torch.randn(2, 4)), props)
    # class 1 (.245) passes 0.2 for both disjoint regions; top-1 keeps one
    assert len(instances[0]) == 1 and instances[0].pred_classes.tolist() == [1]
