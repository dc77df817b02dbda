"""DIoU / CIoU losses against hand-computed values."""
import math

import pytest
import torch

from sephnet.d2.layers import ciou_loss, diou_loss


def test_diou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    # Pair 1: IoU 1/7, centre distance^2 2, enclosing diagonal^2 18. Pair 2: IoU 1/2, 1 / 20.
    expected = torch.tensor([1 - 1 / 7 + 2 / 18, 1 - 0.5 + 1 / 20])
    torch.testing.assert_close(diou_loss(a, b), expected)
    torch.testing.assert_close(diou_loss(a, b, reduction="mean"), expected.mean())
    torch.testing.assert_close(diou_loss(a, b, reduction="sum"), expected.sum())
    torch.testing.assert_close(diou_loss(a[0], b[0]), expected[0])


def test_ciou_adds_aspect_term_with_constant_alpha():
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0]], requires_grad=True)
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1 - 0.5 + v)
    loss = ciou_loss(a, b)
    torch.testing.assert_close(loss, torch.tensor([0.55 + alpha * v]))
    loss.sum().backward()
    assert torch.isfinite(a.grad).all()
    # Same aspect ratio: v = 0 and CIoU equals DIoU.
    c, d = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    torch.testing.assert_close(ciou_loss(c, d), diou_loss(c, d))


def test_identical_boxes_give_zero_loss_and_empty_mean_is_zero():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 7.0]])
    assert diou_loss(boxes, boxes).abs().max() < 1e-6
    assert ciou_loss(boxes, boxes).abs().max() < 1e-6
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = diou_loss(empty, empty, reduction="mean")
    assert loss.item() == 0.0
    loss.backward()
    assert ciou_loss(empty, empty, reduction="mean").item() == 0.0


def test_bad_boxes_and_reduction_raise():
    with pytest.raises(ValueError, match="x2 >= x1"):
        diou_loss(torch.tensor([[3.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="reduction"):
        ciou_loss(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), reduction="avg")
