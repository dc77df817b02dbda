"""The survey's ROI losses against values computed by hand (float64)."""
import math

import pytest
import torch

from sephnet.backend import Box2BoxTransform
from sephnet.modeling.losses import (
    GradientDensityWeights,
    ROIBoxRegressionLoss,
    ROIClassificationLoss,
    asl1_loss,
    balanced_l1_loss,
    iou_loss,
    softmax_focal_loss,
)

D = torch.float64


def _two_way_logits(p_true):
    """Logits [R, 2] whose softmax gives p_true to class 0 (ln p, ln(1 - p))."""
    p = torch.tensor(p_true, dtype=D)
    return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_focal_loss_matches_formula_and_reduces_to_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=D)
    labels = torch.tensor([0, 2])
    p0 = math.exp(2) / (math.exp(2) + 2)  # 0.7870
    p1 = 1 / (math.e + 2)  # 0.2119
    expected = [-((1 - p0) ** 2) * math.log(p0), -((1 - p1) ** 2) * math.log(p1)]
    assert softmax_focal_loss(logits, labels, 2.0).tolist() == pytest.approx(expected, rel=1e-12)
    assert softmax_focal_loss(logits, labels, 0.0).tolist() == pytest.approx(
        [-math.log(p0), -math.log(p1)], rel=1e-12
    )


def test_label_smoothing_target_is_mixed_with_uniform():
    logits = torch.tensor([[2.0, 0.0, 0.0]], dtype=D)
    z = math.exp(2) + 2
    log_p = [math.log(math.exp(2) / z), math.log(1 / z), math.log(1 / z)]
    # eps 0.3 over 3 classes: q = (0.8, 0.1, 0.1)
    expected = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
    loss = ROIClassificationLoss("cross_entropy", label_smoothing=0.3)(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_ghm_c_weights_are_inverse_bin_density():
    # p_t = 0.9, 0.8 -> g = 0.1, 0.2 (bin 0 of 2); p_t = 0.2 -> g = 0.8 (bin 1).
    # T = 3, V = 2: w = 3 / (2 * 2) = 0.75 in bin 0 and 3 / (1 * 2) = 1.5 in bin 1.
    logits = _two_way_logits([0.9, 0.8, 0.2])
    loss = ROIClassificationLoss("ghm_c", ghm_bins=2)(logits, torch.tensor([0, 0, 0]))
    expected = [-0.75 * math.log(0.9), -0.75 * math.log(0.8), -1.5 * math.log(0.2)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-12)


def test_ghm_momentum_smooths_bin_counts_across_calls():
    ghm = GradientDensityWeights(bins=2, momentum=0.5)
    g = torch.tensor([0.1, 0.2, 0.8], dtype=D)
    # call 1: counts (2, 1) -> acc = 0.5 * 0 + 0.5 * (2, 1) = (1, 0.5); w = 3 / (acc * 2)
    assert ghm(g).tolist() == pytest.approx([1.5, 1.5, 3.0])
    # call 2: only bin 1 is filled (count 2): acc = (1, 0.5 * 0.5 + 0.5 * 2) = (1, 1.25);
    # bin 0 keeps its count; V = 1 -> w = 2 / (1.25 * 1)
    assert ghm(torch.tensor([0.7, 0.9], dtype=D)).tolist() == pytest.approx([1.6, 1.6])
    assert ghm.acc_count.tolist() == pytest.approx([1.0, 1.25])
    assert "acc_count" in ghm.state_dict()
    assert "acc_count" not in GradientDensityWeights(bins=2).state_dict()


def test_ghm_weights_average_to_one_without_momentum():
    g = torch.rand(1000, dtype=D)
    assert GradientDensityWeights(bins=10)(g).mean().item() == pytest.approx(1.0, rel=1e-12)


def test_balanced_l1_by_hand_and_continuous_at_beta():
    # alpha 0.5, gamma 1.5, beta 1: b = e^3 - 1 = 19.0855
    # |x| = 0.5: 0.5/b * (b*0.5 + 1) * ln(b*0.5 + 1) - 0.25 = 0.40057
    # |x| = 2:   1.5*2 + 1.5/b - 0.5 = 2.57859
    x = torch.tensor([0.5, -0.5, 2.0, 0.0], dtype=D)
    assert balanced_l1_loss(x).tolist() == pytest.approx(
        [0.4005675069053246, 0.4005675069053246, 2.5785935447368837, 0.0], rel=1e-12
    )
    below = torch.tensor([1 - 1e-9], dtype=D, requires_grad=True)
    above = torch.tensor([1 + 1e-9], dtype=D, requires_grad=True)
    lo, hi = balanced_l1_loss(below), balanced_l1_loss(above)
    assert lo.item() == pytest.approx(hi.item(), abs=1e-8)
    (lo + hi).backward()
    # alpha * ln(b * x / beta + 1) -> alpha * ln(e^3) = 1.5 = gamma at the join
    assert below.grad.item() == pytest.approx(1.5, abs=1e-6)
    assert above.grad.item() == pytest.approx(1.5, abs=1e-12)


def test_asl1_and_ghm_r_by_hand():
    mu = 0.02
    d = torch.tensor([[0.001, 0.001, 0.001, 1.0]], dtype=D)
    asl1_small = math.sqrt(0.001**2 + mu**2) - mu  # 2.4984e-05
    asl1_big = math.sqrt(1 + mu**2) - mu  # 0.980200
    assert asl1_loss(d, mu)[0].tolist() == pytest.approx([asl1_small] * 3 + [asl1_big], rel=1e-12)
    # g = |d| / sqrt(d^2 + mu^2) = 0.0499 (x3, bin 0) and 0.9998 (bin 9); T = 4, V = 2
    # -> w = 4 / (3 * 2) = 2/3 and 4 / (1 * 2) = 2. Proposals equal the gt: target deltas 0.
    boxes = torch.tensor([[10.0, 10.0, 30.0, 40.0]], dtype=D)
    loss = ROIBoxRegressionLoss("ghm_r", ghm_r_mu=mu)(d, boxes, boxes, Box2BoxTransform((1, 1, 1, 1)))
    assert loss.tolist() == pytest.approx([2 / 3 * 3 * asl1_small + 2 * asl1_big], rel=1e-9)


def test_balanced_l1_module_uses_box_coder_targets():
    coder = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=D)
    gt = torch.tensor([[1.0, 0.0, 11.0, 10.0]], dtype=D)  # dx = 10 * 1/10 = 1, rest 0
    loss = ROIBoxRegressionLoss("balanced_l1")(torch.zeros(1, 4, dtype=D), proposals, gt, coder)
    assert loss.item() == pytest.approx(1.078593544736884, rel=1e-9)  # balanced L1 at |x| = 1


def test_iou_loss_by_hand():
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4]], dtype=D)
    gt = torch.tensor([[1.0, 1, 3, 3], [2, 2, 3, 3], [0, 0, 4, 4]], dtype=D)
    # intersection 1, union 7; disjoint; identical
    # eps = 1e-7 on the union moves the values by < 1e-7
    assert iou_loss(pred, gt).tolist() == pytest.approx([1 - 1 / 7, 1.0, 0.0], abs=1e-7)


def test_iou_module_decodes_the_deltas():
    coder = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    proposals = torch.tensor([[0.0, 0, 2, 2]], dtype=D)
    gt = torch.tensor([[1.0, 1, 3, 3]], dtype=D)
    deltas = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=D)  # shifts the box onto the gt
    loss = ROIBoxRegressionLoss("iou")(deltas, proposals, gt, coder)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert ROIBoxRegressionLoss("iou")(torch.zeros_like(deltas), proposals, gt, coder).item() == (
        pytest.approx(1 - 1 / 7, abs=1e-7)
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ROIClassificationLoss("softmax"), "'softmax'"),
        (lambda: ROIClassificationLoss("focal", label_smoothing=0.1), "label_smoothing"),
        (lambda: ROIClassificationLoss("cross_entropy", label_smoothing=1.0), "label_smoothing"),
        (lambda: ROIBoxRegressionLoss("upstream"), "'upstream'"),
        (lambda: ROIBoxRegressionLoss("balanced_l1", balanced_l1_beta=0), "balanced_l1_beta"),
        (lambda: GradientDensityWeights(bins=0), "bins"),
        (lambda: GradientDensityWeights(momentum=1.0), "momentum"),
    ],
)
def test_bad_loss_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
