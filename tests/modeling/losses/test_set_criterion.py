"""DETR's set loss against a hand computation, and the auxiliary losses' names.

The case of tests/modeling/matchers/test_hungarian.py: q0 -> t1 (class 0), q1 -> t0
(class 1), q2 unmatched ("no object", class 2, weight 0.1); T = 2 targets.

    loss_cls  = (-ln .7 - ln .8 - 0.1 ln .6) / (1 + 1 + 0.1)
    loss_bbox = 5 * (0 + .75) / 2              (L1 of q0/t1 and q1/t0)
    loss_giou = 2 * ((1 - 1) + (1 - .5)) / 2
"""
import math

import pytest
import torch

from sephnet.modeling.losses import SetCriterion
from sephnet.modeling.matchers import HungarianMatcher

PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
BOXES = torch.tensor([[0.75, 0.75, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]])
TARGET = {"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])}


def _criterion(**kwargs):
    return SetCriterion(num_classes=2, matcher=HungarianMatcher(), **kwargs)


def test_set_loss_by_hand():
    losses = _criterion(deep_supervision=False)(PROBS.log()[None, None], BOXES[None, None], [TARGET])
    assert sorted(losses) == ["loss_bbox", "loss_cls", "loss_giou"]
    cls = (-math.log(0.7) - math.log(0.8) - 0.1 * math.log(0.6)) / 2.1
    assert losses["loss_cls"].item() == pytest.approx(cls, rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.75 / 2, rel=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(2 * 0.5 / 2, rel=1e-6)


def test_auxiliary_losses_per_decoder_layer():
    """3 decoder layers: the last keeps the plain names, layers 0 and 1 get suffixes; the
    same predictions in every layer give the same values."""
    logits = PROBS.log()[None, None].expand(3, 1, 3, 3)
    boxes = BOXES[None, None].expand(3, 1, 3, 4)
    losses = _criterion()(logits, boxes, [TARGET])
    names = {f"{loss}{suffix}" for loss in ("loss_cls", "loss_bbox", "loss_giou") for suffix in ("", "_0", "_1")}
    assert set(losses) == names
    for name in ("loss_cls", "loss_bbox", "loss_giou"):
        assert losses[f"{name}_0"].item() == pytest.approx(losses[name].item())


def test_image_without_targets_is_all_no_object():
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    boxes = BOXES[None, None].clone().requires_grad_(True)
    losses = _criterion(deep_supervision=False)(PROBS.log()[None, None], boxes, [empty])
    # every query's target is "no object": the weighted mean is the plain mean of -ln p(no object)
    expected = -(math.log(0.1) + math.log(0.1) + math.log(0.6)) / 3
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-6)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    sum(losses.values()).backward()  # the empty box losses keep the graph


def test_weights_scale_each_loss():
    plain = _criterion(deep_supervision=False)(PROBS.log()[None, None], BOXES[None, None], [TARGET])
    scaled = _criterion(class_weight=2.0, bbox_weight=1.0, giou_weight=0.5, deep_supervision=False)(
        PROBS.log()[None, None], BOXES[None, None], [TARGET]
    )
    for name, factor in (("loss_cls", 2.0), ("loss_bbox", 1 / 5), ("loss_giou", 0.25)):
        assert scaled[name].item() == pytest.approx(factor * plain[name].item(), rel=1e-6)


def test_refuses_a_no_object_weight_outside_0_1():
    with pytest.raises(ValueError, match="no_object_weight"):
        _criterion(no_object_weight=0.0)
