"""IoU branch: GIoU/centerness targets by hand, per-version targets and weights, losses."""

import math

import pytest
import torch

from sephnet.modeling.roi_heads.predictor.iou_branch import IoUBranch, centerness_targets, paired_giou


def _focal(x: float, y: float) -> float:
    """The spec's soft-label FL-BCE, written out (docs/components.md#iou-branch)."""
    p = 1 / (1 + math.exp(-x))
    p_t = y * p + (1 - y) * (1 - p)
    bce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return (1 - p_t) ** 2 * (0.25 * y + 0.75 * (1 - y)) * bce


def test_paired_giou_hand_values():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]])
    b = torch.tensor([[0.0, 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3]])
    # identical: 1; disjoint: I=0, U=2, C=3 -> -1/3; overlap: I=1, U=7, C=9 -> 1/7 - 2/9
    expected = torch.tensor([1.0, -1.0 / 3.0, 1.0 / 7.0 - 2.0 / 9.0])
    assert torch.allclose(paired_giou(a, b), expected, atol=1e-5)


def test_centerness_targets_hand_values():
    gt = torch.tensor([[0.0, 0, 10, 20]] * 3)  # w 10, h 20, centre (5, 10)
    proposals = torch.tensor(
        [
            [1.0, 2, 9, 18],  # same centre -> 1
            [2.0, 10, 12, 20],  # centre (7, 15): max(2*5/20, 2*2/10) = 0.5 -> 0.5
            [20.0, 0, 30, 20],  # centre (25, 10): 2*20/10 = 4 -> -3 (not clipped)
        ]
    )
    assert torch.allclose(centerness_targets(proposals, gt), torch.tensor([1.0, 0.5, -3.0]))


def _fields(**overrides):
    fields = dict(
        gt_ious=torch.tensor([0.8, 0.45, 0.3, 0.0]),
        fg_mask=torch.tensor([True, True, False, False]),
        proposal_boxes=torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 9, 9], [0, 0, 4, 4]]),
        gt_boxes=torch.tensor([[4.0, 0, 14, 10], [0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0]]),
        pred_boxes=torch.tensor([[2.0, 0, 12, 10], [0, 0, 10, 10], [1, 1, 2, 2], [0, 0, 1, 1]]),
    )
    fields.update(overrides)
    return fields


def test_version0_targets_proposal_ious_on_all_rois():
    branch = IoUBranch(4, version=0)
    target, weight = branch.targets(torch.zeros(4, 1), **_fields())
    assert torch.allclose(target, torch.tensor([0.8, 0.45, 0.3, 0.0]))
    assert torch.allclose(weight, torch.full((4,), 0.25))


def test_version1_targets_giou_of_decoded_box_and_weights_background():
    branch = IoUBranch(4, version=1, neg_weight=0.3)
    target, weight = branch.targets(torch.zeros(4, 1), **_fields())
    # pred [2,0,12,10] vs gt [4,0,14,10]: I = 80, U = 120, C = 120 -> 2/3; pred == gt -> 1
    assert torch.allclose(target, torch.tensor([2.0 / 3.0, 1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(weight, torch.tensor([0.5, 0.5, 0.15, 0.15]))


def test_version1_needs_decoded_boxes():
    with pytest.raises(ValueError, match="pred_boxes"):
        IoUBranch(4, version=1).targets(torch.zeros(4, 1), **_fields(pred_boxes=None))


def test_version3_targets_proposal_centerness_on_foreground():
    branch = IoUBranch(4, version=3)
    target, weight = branch.targets(torch.zeros(4, 1), **_fields())
    # proposal centre (5,5) vs gt centre (9,5), w 10: 1 - 2*4/10 = 0.2; identical -> 1
    assert torch.allclose(target, torch.tensor([0.2, 1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(weight, torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_version4_and_5_keep_high_targets_and_overconfident_low_ones():
    ious = torch.tensor([0.8, 0.45, 0.3, 0.0])
    logits = torch.tensor([[-5.0], [-5.0], [0.0], [-5.0]])  # sigmoid(0) = 0.5 >= 0.45
    target, weight = IoUBranch(4, version=4).targets(logits, **_fields(gt_ious=ious))
    assert torch.allclose(target, ious)
    assert torch.allclose(weight, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))
    raw = torch.tensor([[0.0], [0.0], [0.5], [0.44]])  # version 5 compares the raw output
    _, weight5 = IoUBranch(4, version=5).targets(raw, **_fields(gt_ious=ious))
    assert torch.allclose(weight5, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))


def test_losses_equal_hand_formulas():
    logits = torch.tensor([[0.5], [-1.0], [2.0], [0.0]])
    ious = [0.8, 0.45, 0.3, 0.0]
    loss0 = IoUBranch(4, version=0).loss(logits, **_fields())
    expected0 = sum(_focal(float(x), y) for x, y in zip(logits[:, 0], ious)) / 4
    assert math.isclose(float(loss0), expected0, rel_tol=1e-5)

    loss1 = IoUBranch(4, version=1, neg_weight=0.5).loss(logits, **_fields())
    pos = (_focal(0.5, 2.0 / 3.0) + _focal(-1.0, 1.0)) / 2
    neg = (_focal(2.0, 0.0) + _focal(0.0, 0.0)) / 2
    assert math.isclose(float(loss1), pos + 0.5 * neg, rel_tol=1e-5)

    raw = torch.tensor([[0.5], [-1.0], [2.0], [0.0]])  # mask: 0.8 > 0.4, 0.45 > 0.4, 2.0 >= 0.45
    loss5 = IoUBranch(4, version=5).loss(raw, **_fields())
    assert math.isclose(float(loss5), (0.3 + 1.45 + 1.7) / 3, rel_tol=1e-5)


@pytest.mark.parametrize("version", [0, 1, 3, 4, 5])
def test_empty_batch_gives_zero_loss_with_gradient(version):
    branch = IoUBranch(3, version=version)
    iou_pred = branch(torch.zeros(0, 3))
    empty = torch.zeros(0, 4)
    loss = branch.loss(
        iou_pred,
        gt_ious=torch.zeros(0),
        fg_mask=torch.zeros(0, dtype=torch.bool),
        proposal_boxes=empty,
        gt_boxes=empty,
        pred_boxes=empty,
    )
    assert float(loss) == 0.0
    loss.backward()
    assert branch.iou_pred.weight.grad is not None


def test_predicted_iou_is_sigmoid_or_clip():
    out = torch.tensor([[-2.0], [0.3], [1.7]])
    assert torch.allclose(IoUBranch(1, version=0).predicted_iou(out), out[:, 0].sigmoid())
    assert torch.allclose(IoUBranch(1, version=5).predicted_iou(out), torch.tensor([0.0, 0.3, 1.0]))


def test_invalid_version_and_test_score_are_rejected():
    with pytest.raises(ValueError, match="version=2"):
        IoUBranch(4, version=2)
    with pytest.raises(ValueError, match="'sometimes'"):
        IoUBranch(4, test_score="sometimes")
