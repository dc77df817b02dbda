"""``TopDownPyramid``: the FPN top-down pathway on a list of maps, shared by sephnet's necks.

::

    C_0 (finest) .. C_{L-1} (coarsest)
    T_{L-1} = lateral_{L-1}(C_{L-1})
    T_l     = lateral_l(C_l) + resize(T_{l+1}, size of C_l)     (nearest; 2x or 1x)
    P_l     = output_l(T_l)

``lateral`` is a 1x1 conv + norm, ``output`` a 3x3 conv + norm (bias only without a norm,
no activation, as detectron2's FPN). Resizing to the finer map's size rather than by a fixed
2x lets equal strides follow each other (DetNet's stride-16 stages).
"""
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.layers.blocks import conv_norm_act

__all__ = ["TopDownPyramid"]


class TopDownPyramid(nn.Module):
    """Laterals + top-down sums + output convs (see the module docstring).

    Args:
        in_channels: channels of C_0 .. C_{L-1}.
        out_channels: C of every output.
        norm: a ``NORM`` name for every conv ("" = none); norm_groups, norm_eps: sephnet's norms.
    State dict: ``lateral.<l>.*``, ``output.<l>.*``.
    """

    def __init__(self, in_channels: List[int], out_channels: int, *, norm: str = "", norm_groups: int = 32, norm_eps: float = 1e-5):
        super().__init__()
        kwargs = dict(norm=norm, activation=False, norm_groups=norm_groups, norm_eps=norm_eps)
        self.lateral = nn.ModuleList(conv_norm_act(c, out_channels, kernel_size=1, **kwargs) for c in in_channels)
        self.output = nn.ModuleList(conv_norm_act(out_channels, out_channels, **kwargs) for _ in in_channels)
        for conv in list(self.lateral) + list(self.output):
            weight_init.c2_xavier_fill(conv)

    def forward(self, inputs: List[torch.Tensor]) -> List[torch.Tensor]:
        """L maps (N, C_l, H_l, W_l), finest first -> L maps (N, out_channels, H_l, W_l)."""
        top = self.lateral[-1](inputs[-1])
        outputs = [self.output[-1](top)]
        for l in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral[l](inputs[l])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[l](top))
        return outputs


def pyramid_io(input_shapes, in_features: List[str], who: str):
    """Output names ``p<level>`` and strides of a neck on ``in_features`` whose strides double.

    Raises:
        ValueError: an input missing from ``input_shapes`` or strides that do not double.
    """
    from sephnet.modeling.backbone.hooks.base import pyramid_level

    missing = [f for f in in_features if f not in input_shapes]
    if missing:
        raise ValueError(f"{who}: inputs {missing} are not among the bottom-up maps {sorted(input_shapes)}")
    strides = [input_shapes[f].stride for f in in_features]
    if len(strides) < 2 or any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise ValueError(f"{who}: inputs {list(in_features)} need >= 2 levels with doubling strides, got {strides}")
    return [f"p{pyramid_level(f)}" for f in in_features], strides
