"""Deformable convolution against a slow per-output / per-tap reference written from the
definition (float64), plus the special cases that pin the layout: zero offsets give an
ordinary convolution, an integer offset shifts the input, and the layers' contracts."""
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sephnet.d2.layers.deform_conv import (
    DeformConv,
    ModulatedDeformConv,
    _deform_conv_pytorch,
    deform_conv,
    modulated_deform_conv,
)

dc_module = importlib.import_module("sephnet.d2.layers.deform_conv")


@pytest.fixture
def pure_path(monkeypatch):
    """Route the public API to the core's own implementation even if torchvision works."""
    monkeypatch.setattr(dc_module, "torchvision_ops", lambda: None)


def _sample(fmap: np.ndarray, y: float, x: float) -> float:
    """Bilinear value of fmap[H, W] at (y, x), every pixel outside the map being 0."""
    height, width = fmap.shape
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * fmap[yy, xx]
    return total


def reference(x, offset, mask, weight, bias, stride, padding, dilation, groups, dgroups):
    x, offset, weight = x.numpy(), offset.numpy(), weight.numpy()
    mask = None if mask is None else mask.numpy()
    n, c, _, _ = x.shape
    o, cg, kh, kw = weight.shape
    _, _, ho, wo = offset.shape
    out = np.zeros((n, o, ho, wo))
    for b in range(n):
        for oc in range(o):
            g = oc // (o // groups)
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if bias is None else float(bias[oc])
                    for ci in range(cg):
                        cin = g * cg + ci
                        dg = cin // (c // dgroups)
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                dy = offset[b, (dg * kh * kw + k) * 2, oy, ox]
                                dx = offset[b, (dg * kh * kw + k) * 2 + 1, oy, ox]
                                y = oy * stride - padding + i * dilation + dy
                                xx = ox * stride - padding + j * dilation + dx
                                m = 1.0 if mask is None else mask[b, dg * kh * kw + k, oy, ox]
                                acc += weight[oc, ci, i, j] * m * _sample(x[b, cin], y, xx)
                    out[b, oc, oy, ox] = acc
    return torch.from_numpy(out)


CASES = [
    # stride, padding, dilation, groups, deformable_groups
    (1, 1, 1, 1, 1),
    (2, 1, 1, 2, 1),
    (1, 2, 2, 1, 2),
    (2, 0, 1, 2, 2),
]


@pytest.mark.parametrize("stride,padding,dilation,groups,dgroups", CASES)
@pytest.mark.parametrize("modulated", [False, True])
def test_matches_loop_reference(pure_path, stride, padding, dilation, groups, dgroups, modulated):
    g = torch.Generator().manual_seed(stride * 7 + padding * 3 + groups + 11 * dgroups)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 4 // groups, 3, 3, generator=g, dtype=torch.float64)
    ho = (6 + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (5 + 2 * padding - dilation * 2 - 1) // stride + 1
    # Offsets up to +-3 px push many samples across and beyond the border.
    offset = 3 * torch.randn(2, 2 * dgroups * 9, ho, wo, generator=g, dtype=torch.float64)
    mask = torch.rand(2, dgroups * 9, ho, wo, generator=g, dtype=torch.float64) if modulated else None
    bias = torch.randn(4, generator=g, dtype=torch.float64) if modulated else None
    got = modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups, dgroups)
    want = reference(x, offset, mask, weight, bias, stride, padding, dilation, groups, dgroups)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_zero_offsets_give_ordinary_conv(pure_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 7, 7, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    offset = torch.zeros(1, 18, 4, 4, dtype=torch.float64)
    got = deform_conv(x, offset, weight, stride=2, padding=1)
    torch.testing.assert_close(got, F.conv2d(x, weight, stride=2, padding=1), rtol=1e-12, atol=1e-12)


def test_integer_offset_shifts_the_input(pure_path):
    # Every tap moved by (+1, -2) equals an ordinary conv of the input shifted by (-1, +2).
    x = torch.arange(1, 1 + 6 * 6, dtype=torch.float64).view(1, 1, 6, 6)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.tensor([1.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 6, 6)
    got = deform_conv(x, offset, weight)
    want = torch.zeros_like(x)
    want[0, 0, :5, 2:] = x[0, 0, 1:, :4]  # zero where the sample falls outside
    torch.testing.assert_close(got, want)


def test_gradients_match_finite_differences(pure_path):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # Fractional offsets away from integers: bilinear is smooth there.
    offset = (0.3 + 0.4 * torch.rand(1, 18, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(1, 9, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: modulated_deform_conv(a[0], a[1], a[2], a[3], None, 1, 1), (x, offset, mask, weight)
    )


def test_layers_state_dict_and_empty_input(pure_path):
    plain = DeformConv(4, 6, 3, padding=1, norm=torch.nn.BatchNorm2d(6))
    assert set(plain.state_dict()) >= {"weight", "norm.weight", "norm.running_mean"}
    assert "bias" not in plain.state_dict()
    mod = ModulatedDeformConv(4, 6, 3, padding=1, bias=True)
    assert set(mod.state_dict()) == {"weight", "bias"}
    assert torch.all(mod.bias == 0)
    empty = mod(torch.zeros(0, 4, 5, 5), torch.zeros(0, 18, 5, 5), torch.zeros(0, 9, 5, 5))
    assert empty.shape == (0, 6, 5, 5)
    with pytest.raises(ValueError, match="DeformConv has no bias"):
        DeformConv(4, 6, 3, bias=True)


def test_bad_offset_shape_is_refused(pure_path):
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv(torch.zeros(1, 2, 5, 5), torch.zeros(1, 9, 5, 5), torch.zeros(2, 2, 3, 3), padding=1)


def test_torchvision_path_agrees_when_usable():
    ops = dc_module.torchvision_ops()
    if ops is None:
        pytest.skip("torchvision's compiled ops are not usable here")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    offset = 2 * torch.randn(2, 36, 6, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 18, 6, 6, generator=g, dtype=torch.float64)
    got = modulated_deform_conv(x, offset, mask, weight, None, 1, 1, 1, 2, 2)
    want = _deform_conv_pytorch(x, offset, mask, weight, None, (1, 1), (1, 1), (1, 1), 2, 2)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
