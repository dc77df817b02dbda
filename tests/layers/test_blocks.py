"""conv/FC + norm + activation blocks: bias only without norm, no ReLU after EvoNormS0."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.layers.blocks import FCNormAct, conv_norm_act
from sephnet.layers.evonorm import EvoNormS0


def _group_norm_by_hand(y, groups, eps=1e-5):
    """GroupNorm of y[R, D] over each group's D/G values (unit affine)."""
    r, d = y.shape
    g = y.reshape(r, groups, d // groups)
    mean = g.mean(dim=2, keepdim=True)
    var = ((g - mean) ** 2).mean(dim=2, keepdim=True)
    return ((g - mean) / torch.sqrt(var + eps)).reshape(r, d)


def test_conv_without_norm_has_bias_and_relu():
    conv = conv_norm_act(4, 8)
    assert conv.bias is not None and conv.norm is None
    assert isinstance(conv.activation, nn.ReLU)
    x = torch.randn(2, 4, 6, 6)
    expected = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(conv(x), expected)


def test_conv_with_evonorm_has_no_bias_and_no_relu():
    conv = conv_norm_act(4, 8, norm="EvoNormS0", norm_groups=4)
    assert conv.bias is None
    assert isinstance(conv.norm, EvoNormS0) and conv.norm.groups == 4
    assert conv.activation is None
    assert not any(isinstance(m, nn.ReLU) for m in conv.modules())
    x = torch.randn(2, 4, 6, 6)
    expected = conv.norm(F.conv2d(x, conv.weight, padding=1))
    torch.testing.assert_close(conv(x), expected)
    assert (conv(x) < 0).any()  # the output is not clipped by a ReLU


def test_conv_with_gn_keeps_relu_after_the_norm():
    conv = conv_norm_act(4, 32, norm="GN")
    assert conv.bias is None and isinstance(conv.norm, nn.GroupNorm)
    assert isinstance(conv.activation, nn.ReLU)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x), F.relu(conv.norm(F.conv2d(x, conv.weight, padding=1))))


def test_conv_activation_can_be_turned_off():
    assert conv_norm_act(4, 8, activation=False).activation is None


@pytest.mark.parametrize(
    "kwargs,out_hw",
    [({}, 7), ({"padding": 0}, 5), ({"stride": 2}, 4), ({"kernel_size": 1}, 7)],
)
def test_conv_padding_defaults_to_same(kwargs, out_hw):
    conv = conv_norm_act(3, 8, **kwargs)
    assert conv(torch.randn(1, 3, 7, 7)).shape == (1, 8, out_hw, out_hw)


def test_conv_state_dict_names_match_detectron2_conv2d():
    keys = set(conv_norm_act(4, 8, norm="EvoNormS0", norm_groups=4).state_dict())
    assert keys == {"weight", "norm.weight", "norm.bias", "norm.v"}


def test_fc_without_norm_is_linear_plus_relu_on_flattened_input():
    fc = FCNormAct(4 * 2 * 2, 6)
    assert fc.bias is not None and fc.norm is None
    x = torch.randn(3, 4, 2, 2)
    expected = F.relu(x.reshape(3, 16) @ fc.weight.t() + fc.bias)
    torch.testing.assert_close(fc(x), expected)


def test_fc_with_gn_normalises_each_group_of_outputs():
    fc = FCNormAct(10, 64, norm="GN")
    assert fc.bias is None
    x = torch.randn(5, 10)
    expected = F.relu(_group_norm_by_hand(x @ fc.weight.t(), groups=32))
    torch.testing.assert_close(fc(x), expected, rtol=1e-5, atol=1e-5)


def test_fc_with_evonorm_uses_the_2d_form_and_no_relu():
    fc = FCNormAct(10, 8, norm="EvoNormS0", norm_groups=2)
    assert fc.activation is None and fc.bias is None
    x = torch.randn(5, 10)
    linear = x @ fc.weight.t()
    torch.testing.assert_close(fc(x), fc.norm(linear))
    assert (fc(x) < 0).any()


def test_fc_with_bn_normalises_over_rois():
    fc = FCNormAct(10, 8, norm="BN", activation=False).train()
    y = fc(torch.randn(16, 10))
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["", "GN", "EvoNormS0"])
def test_fc_accepts_zero_rois_and_backpropagates(norm):
    fc = FCNormAct(12, 128, norm=norm)  # GN: 4 outputs per group
    assert fc(torch.zeros(0, 3, 2, 2)).shape == (0, 128)
    x = torch.randn(4, 12, requires_grad=True)
    fc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_blocks_reject_unknown_norm_names():
    with pytest.raises(ValueError, match="'EvoNorm'"):
        conv_norm_act(4, 8, norm="EvoNorm")
    with pytest.raises(ValueError, match="'EvoNorm'"):
        FCNormAct(4, 8, norm="EvoNorm")
