"""PAFPN: FPN plus PANet's bottom-up path augmentation (Liu et al., "Path Aggregation
Network for Instance Segmentation", 2018).

::

    C_l (MODEL.FPN.IN_FEATURES) --TopDownPyramid--> P_l
    N_first = P_first
    N_{l+1} = fuse_l( down_l(N_l) + P_{l+1} )
        down_l: 3x3 stride-2 conv + norm + ReLU;  fuse_l: 3x3 conv + norm + ReLU
    outputs p<level> = N_l, every one OUT_CHANNELS wide, strides of the inputs

The bottom-up path shortens the route from fine, well-localised features to the coarse
levels (a few convs instead of the whole ResNet). Built by ``build_seph_pafpn_backbone``
inside sephnet's hooked backbone (extra levels, hooks around the neck).
"""
from typing import Dict, List

import torch
from torch import nn

from sephnet.backend import BACKBONE_REGISTRY, ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooked_backbone import build_hooked_neck_backbone
from sephnet.modeling.backbone.top_down import TopDownPyramid, pyramid_io

__all__ = ["PAFPN", "build_seph_pafpn_backbone"]


class PAFPN(nn.Module):
    """Top-down FPN followed by a bottom-up path (see the module docstring).

    Args:
        input_shapes: the bottom-up dict's shapes.
        in_features: inputs, finest first, strides doubling.
        out_channels: C of every output.
        norm, norm_groups, norm_eps: norm of every conv (a ``NORM`` name; "" = none).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.out_names, strides = pyramid_io(input_shapes, in_features, "PAFPN")
        kwargs = dict(norm=norm, norm_groups=norm_groups, norm_eps=norm_eps)
        self.top_down = TopDownPyramid([input_shapes[f].channels for f in in_features], out_channels, **kwargs)
        n = len(in_features) - 1
        self.down = nn.ModuleList(conv_norm_act(out_channels, out_channels, stride=2, **kwargs) for _ in range(n))
        self.fuse = nn.ModuleList(conv_norm_act(out_channels, out_channels, **kwargs) for _ in range(n))
        self._shapes = {k: ShapeSpec(channels=out_channels, stride=s) for k, s in zip(self.out_names, strides)}
        self.size_divisibility = strides[-1]

    @classmethod
    def from_config(cls, cfg, input_shapes):
        return {
            "input_shapes": input_shapes,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
            "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
        }

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """{in_feature: (N, C_l, H_l, W_l)} -> {p<level>: (N, out_channels, H_l, W_l)}."""
        pyramid = self.top_down([features[f] for f in self.in_features])
        outputs = [pyramid[0]]
        for down, fuse, lateral in zip(self.down, self.fuse, pyramid[1:]):
            outputs.append(fuse(down(outputs[-1]) + lateral))
        return dict(zip(self.out_names, outputs))


@BACKBONE_REGISTRY.register()
def build_seph_pafpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet -> extra levels (``MODEL.SEPH.NECKS.EXTRA_LEVELS``) -> hooks around a :class:`PAFPN`
    on ``MODEL.FPN.IN_FEATURES`` (``OUT_CHANNELS``, ``NORM``)."""
    return build_hooked_neck_backbone(cfg, input_shape, PAFPN)
