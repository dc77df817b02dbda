"""IoU-weighted class loss weights, weighted cross-entropy, and the soft-label focal BCE."""

import math

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss
from torch.nn import functional as F

from sephnet.layers.losses import (
    iou_box_loss_weights,
    iou_class_loss_weights,
    weighted_cross_entropy,
)

IOUS = torch.tensor([0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 1.0])


def test_square_weights_at_chosen_ious():
    # min(1, 100 (s - 0.5)^2), by hand
    expected = torch.tensor([1.0, 1.0, 1.0, 0.25, 0.0, 0.25, 1.0, 1.0, 1.0])
    assert torch.allclose(iou_class_loss_weights(IOUS, "square"), expected, atol=1e-6)


def test_linear_weights_at_chosen_ious():
    # 4 |s - 0.5|, unclipped
    expected = torch.tensor([2.0, 0.8, 0.4, 0.2, 0.0, 0.2, 0.4, 0.8, 2.0])
    assert torch.allclose(iou_class_loss_weights(IOUS, "linear"), expected, atol=1e-6)


def test_no_weighting_is_all_ones_and_weights_carry_no_gradient():
    assert torch.equal(iou_class_loss_weights(IOUS, "none"), torch.ones(9))
    ious = IOUS.clone().requires_grad_(True)
    assert not iou_class_loss_weights(ious, "square").requires_grad


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError, match="'cubic'"):
        iou_class_loss_weights(IOUS, "cubic")


def test_box_loss_weights_are_one_above_half_else_the_iou():
    expected = torch.tensor([0.0, 0.3, 0.4, 0.45, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert torch.allclose(iou_box_loss_weights(IOUS), expected)
    assert not iou_box_loss_weights(IOUS.clone().requires_grad_(True)).requires_grad


def test_weighted_cross_entropy_divides_by_roi_count_not_weight_sum():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    weights = torch.tensor([0.25, 1.0])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(1 / (math.e + 2))
    expected = (0.25 * ce0 + 1.0 * ce1) / 2
    assert math.isclose(
        float(weighted_cross_entropy(logits, labels, weights)), expected, rel_tol=1e-6
    )
    assert torch.allclose(weighted_cross_entropy(logits, labels), F.cross_entropy(logits, labels))


def test_weighted_cross_entropy_empty_is_zero_and_backward_works():
    logits = torch.zeros((0, 4), requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.zeros((0,), dtype=torch.int64), torch.zeros(0))
    assert float(loss) == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 4)


@pytest.mark.parametrize("y", [0.0, 0.3, 0.7, 1.0, -0.2])
def test_fvcore_focal_loss_is_the_spec_soft_label_fl_bce(y):
    # docs/components.md#iou-branch: p = sigmoid(x); p_t = y p + (1-y)(1-p); loss = (1 - p_t)^2
    # (0.25 y + 0.75 (1 - y)) BCE(y, p); y may be a GIoU < 0.
    x = 0.8
    p = 1 / (1 + math.exp(-x))
    p_t = y * p + (1 - y) * (1 - p)
    bce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    expected = (1 - p_t) ** 2 * (0.25 * y + 0.75 * (1 - y)) * bce
    got = sigmoid_focal_loss(
        torch.tensor([x]), torch.tensor([y]), alpha=0.25, gamma=2.0, reduction="none"
    )
    assert math.isclose(float(got), expected, rel_tol=1e-5, abs_tol=1e-7)
