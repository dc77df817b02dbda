"""CosineLinear: scale-bounded cosine logits, input-scale invariance, the scale's gradient."""

import math

import pytest
import torch
from torch import nn

from sephnet.layers.cosine_linear import CosineLinear


def test_cosine_linear_matches_hand_computed_cosines():
    layer = CosineLinear(2, 3, scale=10.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    logits = layer(torch.tensor([[3.0, 4.0]]))
    # |x| = 5: cos with (1,0) = 3/5, with (0,1) = 4/5, with (-1,-1)/sqrt2 = -7/(5 sqrt2)
    expected = 10.0 * torch.tensor([[0.6, 0.8, -7.0 / (5.0 * math.sqrt(2.0))]])
    assert torch.allclose(logits, expected, atol=1e-6)


@pytest.mark.parametrize("scale", [20.0, 3.5])
def test_logits_bounded_by_scale(scale):
    layer = CosineLinear(16, 5, scale=scale)
    x = torch.randn(64, 16) * 1000.0
    logits = layer(x)
    assert logits.shape == (64, 5)
    assert logits.abs().max() <= scale + 1e-4
    # a feature equal to a class weight reaches the bound exactly
    same = layer(layer.weight[2:3].detach() * 7.0)
    assert torch.isclose(same[0, 2], torch.tensor(scale), atol=1e-4)


@pytest.mark.parametrize("factor", [1e-3, 0.5, 42.0])
def test_logits_invariant_to_feature_scaling(factor):
    layer = CosineLinear(8, 4)
    x = torch.randn(10, 8)
    assert torch.allclose(layer(x), layer(x * factor), atol=1e-4)


def test_zero_feature_gives_zero_logits():
    layer = CosineLinear(8, 4)
    out = layer(torch.zeros(2, 8))
    assert torch.equal(out, torch.zeros(2, 4))


def test_learnable_scale_gets_gradient_fixed_scale_does_not():
    x = torch.randn(6, 8)
    learnable = CosineLinear(8, 3, scale=5.0, learnable_scale=True)
    learnable(x).pow(2).sum().backward()
    assert isinstance(learnable.scale, nn.Parameter)
    assert learnable.scale.grad is not None and learnable.scale.grad.abs() > 0
    assert any(p is learnable.scale for p in learnable.parameters())

    fixed = CosineLinear(8, 3, scale=5.0)
    fixed(x).pow(2).sum().backward()
    assert not fixed.scale.requires_grad
    assert fixed.scale.grad is None
    assert all(p is not fixed.scale for p in fixed.parameters())
    assert fixed.weight.grad is not None  # the weights still train


def test_state_dict_moves_between_fixed_and_learnable_scale():
    fixed = CosineLinear(8, 3, scale=7.0)
    learnable = CosineLinear(8, 3, scale=1.0, learnable_scale=True)
    assert set(fixed.state_dict()) == set(learnable.state_dict()) == {"weight", "scale"}
    learnable.load_state_dict(fixed.state_dict())
    x = torch.randn(4, 8)
    assert torch.allclose(learnable(x), fixed(x))
    assert learnable.scale.item() == 7.0


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_non_positive_scale_is_rejected(scale):
    with pytest.raises(ValueError, match="scale"):
        CosineLinear(8, 3, scale=scale)
