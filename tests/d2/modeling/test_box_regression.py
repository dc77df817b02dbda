import math

import pytest
import torch

from sephnet.d2.modeling.box_regression import (
    _DEFAULT_SCALE_CLAMP,
    Box2BoxTransform,
    Box2BoxTransformLinear,
    _dense_box_regression_loss,
)
from sephnet.d2.structures import Boxes


def _random_boxes(n: int, max_coord: float = 200.0) -> torch.Tensor:
    xy = torch.rand(n, 2) * max_coord
    wh = torch.rand(n, 2) * max_coord + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def test_default_scale_clamp_is_log_1000_over_16():
    assert _DEFAULT_SCALE_CLAMP == pytest.approx(math.log(62.5))
    assert Box2BoxTransform((1.0, 1.0, 1.0, 1.0)).scale_clamp == _DEFAULT_SCALE_CLAMP


def test_get_deltas_hand_case():
    # src: w=10, h=20, centre (5, 10); target: w=10, h=30, centre (10, 20).
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    tgt = torch.tensor([[5.0, 5.0, 15.0, 35.0]])
    deltas = t.get_deltas(src, tgt)
    expected = torch.tensor([[10 * 5 / 10, 10 * 10 / 20, 0.0, 5 * math.log(30 / 20)]])
    assert torch.allclose(deltas, expected, atol=1e-6)
    assert torch.allclose(t.apply_deltas(deltas, src), tgt, atol=1e-5)


def test_apply_deltas_hand_case_unit_weights():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w=20, h=40, centre (20, 40)
    deltas = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])
    # centre (20 + 0.5*20, 40 - 0.25*40) = (30, 30); size (40, 40)
    out = t.apply_deltas(deltas, boxes)
    assert torch.allclose(out, torch.tensor([[10.0, 10.0, 50.0, 50.0]]), atol=1e-5)


def test_round_trip_random_boxes():
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src, tgt = _random_boxes(50), _random_boxes(50)
    deltas = t.get_deltas(src, tgt)
    assert deltas.shape == (50, 4)
    assert torch.allclose(t.apply_deltas(deltas, src), tgt, rtol=1e-4, atol=1e-3)


def test_apply_deltas_class_specific_and_float32_output():
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = _random_boxes(7)
    tgt_a, tgt_b = _random_boxes(7), _random_boxes(7)
    deltas = torch.cat([t.get_deltas(src, tgt_a), t.get_deltas(src, tgt_b)], dim=1)  # (7, 8)
    out = t.apply_deltas(deltas.half(), src.half())
    assert out.dtype == torch.float32 and out.shape == (7, 8)
    out = t.apply_deltas(deltas, src)
    assert torch.allclose(out[:, :4], tgt_a, rtol=1e-4, atol=1e-3)
    assert torch.allclose(out[:, 4:], tgt_b, rtol=1e-4, atol=1e-3)


def test_huge_dw_dh_are_clamped():
    t = Box2BoxTransform((1.0, 1.0, 2.0, 2.0))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 8.0]])  # w=16, h=8, centre (8, 4)
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 1000.0, -1.0]]), boxes)
    # dw = 1000 / 2 clamps to log(62.5): width 16 * 62.5 = 1000; dh = -0.5 is not clamped.
    new_w, new_h = 1000.0, 8.0 * math.exp(-0.5)
    expected = torch.tensor([[8 - new_w / 2, 4 - new_h / 2, 8 + new_w / 2, 4 + new_h / 2]])
    assert torch.isfinite(out).all()
    assert torch.allclose(out, expected, rtol=1e-5)


def test_custom_scale_clamp():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(2.0))
    out = t.apply_deltas(
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    )
    assert torch.allclose(out, torch.tensor([[-5.0, -5.0, 15.0, 15.0]]), atol=1e-5)


def test_get_deltas_rejects_degenerate_source_and_non_tensors():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        t.get_deltas(torch.tensor([[5.0, 0.0, 5.0, 10.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(TypeError):
        t.get_deltas([[0.0, 0.0, 1.0, 1.0]], torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_linear_transform_hand_case_and_round_trip():
    t = Box2BoxTransformLinear(normalize_by_size=True)
    anchor = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # centre (4, 4), size 8
    target = torch.tensor([[2.0, 1.0, 12.0, 20.0]])
    deltas = t.get_deltas(anchor, target)
    assert torch.allclose(deltas, torch.tensor([[2.0, 3.0, 8.0, 16.0]]) / 8)
    assert torch.allclose(t.apply_deltas(deltas, anchor), target)
    # Negative distances are clipped: the box collapses onto the centre.
    collapsed = t.apply_deltas(torch.tensor([[-1.0, -1.0, -1.0, -1.0]]), anchor)
    assert torch.allclose(collapsed, torch.tensor([[4.0, 4.0, 4.0, 4.0]]))
    raw = Box2BoxTransformLinear(normalize_by_size=False)
    assert torch.allclose(raw.get_deltas(anchor, target), torch.tensor([[2.0, 3.0, 8.0, 16.0]]))


def _dense_inputs():
    anchors = [
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 30.0]])),
        Boxes(torch.tensor([[0.0, 0.0, 40.0, 20.0]])),
    ]
    gt = [
        torch.tensor([[1.0, 1.0, 11.0, 12.0], [8.0, 8.0, 30.0, 33.0], [0.0, 0.0, 40.0, 20.0]]),
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [12.0, 10.0, 28.0, 30.0], [5.0, 0.0, 40.0, 25.0]]),
    ]
    fg_mask = torch.tensor([[True, True, False], [False, True, True]])
    return anchors, gt, fg_mask


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou", "diou", "ciou"])
def test_dense_loss_is_zero_for_perfect_predictions(loss_type):
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    anchors, gt, fg_mask = _dense_inputs()
    all_anchors = torch.cat([a.tensor for a in anchors])
    deltas = torch.stack([t.get_deltas(all_anchors, g) for g in gt])  # (N=2, R=3, 4)
    pred = [deltas[:, :2], deltas[:, 2:]]
    loss = _dense_box_regression_loss(anchors, t, pred, gt, fg_mask, loss_type)
    assert loss.dim() == 0
    assert float(loss) == pytest.approx(0.0, abs=1e-4)


def test_dense_smooth_l1_sums_over_foreground_only():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    anchors, gt, fg_mask = _dense_inputs()
    all_anchors = torch.cat([a.tensor for a in anchors])
    deltas = torch.stack([t.get_deltas(all_anchors, g) for g in gt])
    offset = torch.zeros_like(deltas)
    offset[0, 0, 0] = 0.5  # foreground: contributes |0.5|
    offset[1, 1, 3] = -2.0  # foreground: contributes |-2|
    offset[0, 2, 1] = 7.0  # background: ignored
    pred = deltas + offset
    loss = _dense_box_regression_loss(
        anchors, t, [pred[:, :2], pred[:, 2:]], gt, fg_mask, "smooth_l1", 0.0
    )
    assert float(loss) == pytest.approx(2.5, abs=1e-5)
    # beta=1: 0.5 -> 0.5 * 0.5**2 / 1 = 0.125; 2 -> 2 - 0.5 = 1.5
    loss = _dense_box_regression_loss(
        anchors, t, [pred[:, :2], pred[:, 2:]], gt, fg_mask, "smooth_l1", 1.0
    )
    assert float(loss) == pytest.approx(1.625, abs=1e-5)


def test_dense_loss_rejects_unknown_type():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    anchors, gt, fg_mask = _dense_inputs()
    with pytest.raises(ValueError, match="l2"):
        _dense_box_regression_loss(
            anchors, t, [torch.zeros(2, 2, 4), torch.zeros(2, 1, 4)], gt, fg_mask, "l2"
        )
