"""Deformable convolution (Dai et al. 2017) and its modulated form (Zhu et al., DCNv2).

For an output position p = (oy, ox), kernel tap k = (i, j) and input channel c in offset
group g (channels are split into ``deformable_groups`` equal groups)::

    y = oy * stride - padding + i * dilation + dy[g, k, oy, ox]
    x = ox * stride - padding + j * dilation + dx[g, k, oy, ox]
    out[o, oy, ox] = sum_{c, k} weight[o, c, i, j] * m[g, k, oy, ox] * bilinear(input[c], y, x)
                     (+ bias[o])

``bilinear`` treats every pixel outside the map as 0 (so a sample with y <= -1, y >= H,
x <= -1 or x >= W is 0). ``offset`` has 2 * G * kh * kw channels ordered (group, tap, [dy,
dx]); ``mask`` (modulated only, usually a sigmoid) has G * kh * kw channels ordered (group,
tap); the plain form uses m = 1. Convolution ``groups`` work as in ``nn.Conv2d``.

This is the layout of torchvision's ``deform_conv2d`` and of detectron2's kernels. When
torchvision's compiled op is usable it runs; otherwise a vectorised PyTorch implementation
(bilinear gathers into an im2col buffer, then a grouped matrix product) gives the same
numbers and is differentiable in input, offset, mask and weight. Unlike detectron2 (whose
CPU path refuses ``deformable_groups != 1`` and the modulated op), both forms work on CPU.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .torchvision_ops import torchvision_ops

__all__ = ["deform_conv", "modulated_deform_conv", "DeformConv", "ModulatedDeformConv"]


def _output_size(
    in_size: Tuple[int, int], kernel: Tuple[int, int], stride, padding, dilation
) -> Tuple[int, int]:
    """(Ho, Wo) of a convolution with these settings."""
    return tuple(
        (size + 2 * p - (d * (k - 1) + 1)) // s + 1
        for size, k, s, p, d in zip(in_size, kernel, stride, padding, dilation)
    )


def _check_shapes(x, offset, mask, weight, groups, deformable_groups, out_hw):
    """Raise ValueError naming the mismatch between input/offset/mask/weight shapes."""
    if x.dim() != 4:
        raise ValueError(f"deform_conv: input must be (N, C, H, W), got {tuple(x.shape)}")
    n, c = x.shape[:2]
    taps = weight.shape[2] * weight.shape[3]
    if c % groups or c % deformable_groups or weight.shape[0] % groups:
        raise ValueError(
            f"deform_conv: {c} input / {weight.shape[0]} output channels are not divisible by "
            f"groups={groups} and deformable_groups={deformable_groups}"
        )
    if weight.shape[1] * groups != c:
        raise ValueError(
            f"deform_conv: weight {tuple(weight.shape)} with groups={groups} expects "
            f"{weight.shape[1] * groups} input channels, got {c}"
        )
    expected = (n, 2 * deformable_groups * taps) + tuple(out_hw)
    if tuple(offset.shape) != expected:
        raise ValueError(f"deform_conv: offset must have shape {expected}, got {tuple(offset.shape)}")
    if mask is not None:
        expected = (n, deformable_groups * taps) + tuple(out_hw)
        if tuple(mask.shape) != expected:
            raise ValueError(f"deform_conv: mask must have shape {expected}, got {tuple(mask.shape)}")


def _deform_conv_pytorch(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    groups: int,
    deformable_groups: int,
) -> torch.Tensor:
    """The pure-PyTorch op; arguments as :func:`modulated_deform_conv` (tuples for the geometry)."""
    n, c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    ho, wo = _output_size((h, w), (kh, kw), stride, padding, dilation)
    taps, dg = kh * kw, deformable_groups

    # Sampling positions (N, G, K, Ho, Wo): the regular grid plus the learned offsets.
    off = offset.view(n, dg, taps, 2, ho, wo)
    ki = torch.arange(kh, device=x.device, dtype=x.dtype).repeat_interleave(kw) * dilation[0]
    kj = torch.arange(kw, device=x.device, dtype=x.dtype).repeat(kh) * dilation[1]
    oy = torch.arange(ho, device=x.device, dtype=x.dtype) * stride[0] - padding[0]
    ox = torch.arange(wo, device=x.device, dtype=x.dtype) * stride[1] - padding[1]
    py = off[:, :, :, 0] + (ki[:, None, None] + oy[None, :, None])
    px = off[:, :, :, 1] + (kj[:, None, None] + ox[None, None, :])

    # Bilinear interpolation with zero outside the map, as four masked gathers.
    y0, x0 = py.floor(), px.floor()
    ly, lx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    feat = x.reshape(n, dg, c // dg, h * w)
    columns = x.new_zeros(n, dg, c // dg, taps * ho * wo)
    for dy, dx, wgt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                        (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).view(n, dg, 1, -1)
        values = feat.gather(3, index.expand(-1, -1, c // dg, -1))
        columns = columns + values * (wgt * inside).view(n, dg, 1, -1)
    if mask is not None:
        columns = columns * mask.reshape(n, dg, 1, -1)

    # im2col layout (N, groups, C/groups * K, Ho*Wo) against weight (groups, O/groups, C/groups*K).
    columns = columns.view(n, c, taps, ho * wo).view(n, groups, (c // groups) * taps, ho * wo)
    kernel = weight.reshape(groups, out_c // groups, -1)
    out = torch.einsum("gok,ngkp->ngop", kernel, columns).reshape(n, out_c, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def modulated_deform_conv(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    deformable_groups: int = 1,
) -> torch.Tensor:
    """Deformable convolution; modulated by ``mask`` unless it is None (see the module docstring).

    Args:
        input: (N, C, H, W).
        offset: (N, 2*G*kh*kw, Ho, Wo), G = ``deformable_groups``.
        mask: (N, G*kh*kw, Ho, Wo) or None.
        weight: (O, C/groups, kh, kw).
        bias: (O,) or None.
        stride, padding, dilation: int or (h, w) pair.

    Returns:
        (N, O, Ho, Wo).

    Raises:
        ValueError: inconsistent shapes or channel counts (the message names them).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    out_hw = _output_size(input.shape[-2:], weight.shape[-2:], stride, padding, dilation)
    _check_shapes(input, offset, mask, weight, groups, deformable_groups, out_hw)
    ops = torchvision_ops()
    if ops is not None:
        return ops.deform_conv2d(
            input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
        )
    return _deform_conv_pytorch(
        input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups
    )


def deform_conv(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    deformable_groups: int = 1,
) -> torch.Tensor:
    """Deformable convolution without modulation or bias (detectron2's ``deform_conv``)."""
    return modulated_deform_conv(
        input, offset, None, weight, None, stride, padding, dilation, groups, deformable_groups
    )


class _DeformConvBase(nn.Module):
    """Holds the geometry, ``weight`` (O, C/groups, kh, kw), ``norm`` and ``activation``."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
        deformable_groups, norm, activation,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} must be divisible "
                f"by groups={groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _geometry(self):
        return _pair(self.stride), _pair(self.padding), _pair(self.dilation)

    def _run(self, x, offset, mask, bias):
        stride, padding, dilation = self._geometry()
        if x.numel() == 0:
            out_hw = _output_size(x.shape[-2:], self.kernel_size, stride, padding, dilation)
            # Multiplying by 0 keeps the (empty) result attached to the graph.
            return x.new_zeros((x.shape[0], self.out_channels) + tuple(out_hw)) + 0 * self.weight.sum()
        x = modulated_deform_conv(
            x, offset, mask, self.weight, bias, stride, padding, dilation,
            self.groups, self.deformable_groups,
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DeformConv(_DeformConvBase):
    """Deformable conv layer without bias: ``forward(x, offset)``; state dict ``weight`` (+ ``norm.*``).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        deformable_groups: number of offset groups G.
        bias: must be False (detectron2's layer has none).
        norm: optional module applied to the output; activation: optional callable after it.
    """

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
        deformable_groups=1, bias=False, norm=None, activation=None,
    ):
        if bias:
            raise ValueError("DeformConv has no bias; use ModulatedDeformConv(bias=True) for one")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            deformable_groups, norm, activation,
        )
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.bias = None

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), offset (N, 2*G*kh*kw, Ho, Wo) -> (N, O, Ho, Wo)."""
        return self._run(x, offset, None, None)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable conv (DCNv2): ``forward(x, offset, mask)``; optional ``bias``.

    Args: as :class:`DeformConv`, with ``bias`` (default True, initialised to 0).
    """

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
        deformable_groups=1, bias=True, norm=None, activation=None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            deformable_groups, norm, activation,
        )
        # detectron2 keeps these as given (ints), not as pairs.
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.with_bias = bias
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), offset (N, 2*G*kh*kw, Ho, Wo), mask (N, G*kh*kw, Ho, Wo) -> (N, O, Ho, Wo)."""
        return self._run(x, offset, mask, self.bias)
