"""ASFF: adaptively spatial feature fusion on an FPN (Liu et al., "Learning Spatial Fusion for
Single-Shot Object Detection", 2019), for any number of levels.

::

    C_l --TopDownPyramid--> P_0 .. P_{L-1}
    for every output level t:
        R_{s->t} = P_s resized to level t:   s == t: P_t
                   s finer (k = t - s levels): (k-1) x max-pool 3x3/2, then 3x3/2 conv + norm + ReLU
                   s coarser: nearest upsampling to P_t's size
        w_{s->t} = 1x1 conv (C -> WEIGHT_CHANNELS, bias) + ReLU of R_{s->t} (no norm: few channels)
        alpha_t  = softmax over s of 1x1 conv(concat_s w_{s->t})     (L weights per pixel)
        out_t    = 3x3 conv + norm ( sum_s alpha_t[s] * R_{s->t} )
    outputs p<level>, OUT_CHANNELS wide

The paper fuses YOLOv3's three levels and shrinks channels with 1x1 convs before upsampling;
here every level already has the FPN's width, so upsampling needs no conv.
"""
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import BACKBONE_REGISTRY, ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooked_backbone import build_hooked_neck_backbone
from sephnet.modeling.backbone.top_down import TopDownPyramid, pyramid_io

__all__ = ["ASFF", "build_seph_asff_backbone"]


class _Downsample(nn.Module):
    """Resize a map ``levels`` pyramid levels down: max-pools, then one strided conv."""

    def __init__(self, channels: int, levels: int, **norm):
        super().__init__()
        self.pools = levels - 1
        self.conv = conv_norm_act(channels, channels, stride=2, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.pools):
            x = F.max_pool2d(x, 3, stride=2, padding=1)
        return self.conv(x)


class ASFF(nn.Module):
    """FPN whose outputs are per-pixel softmax-weighted sums of all levels (see the module docstring).

    Args:
        input_shapes, in_features, out_channels, norm, norm_groups, norm_eps: as :class:`PAFPN`.
        weight_channels: width of the per-source weight features (16 in the paper).
    State dict: ``top_down.*``, ``resize.<t>.<s>.*`` (s finer than t), ``weight_feat.<t>.<s>.*``,
    ``weight_logits.<t>.*``, ``output.<t>.*``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int,
        weight_channels: int = 16,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.out_names, strides = pyramid_io(input_shapes, in_features, "ASFF")
        kwargs = dict(norm=norm, norm_groups=norm_groups, norm_eps=norm_eps)
        levels = len(in_features)
        self.top_down = TopDownPyramid([input_shapes[f].channels for f in in_features], out_channels, **kwargs)
        self.resize = nn.ModuleList(
            nn.ModuleDict({str(s): _Downsample(out_channels, t - s, **kwargs) for s in range(t)})
            for t in range(levels)
        )
        self.weight_feat = nn.ModuleList(
            nn.ModuleList(conv_norm_act(out_channels, weight_channels, kernel_size=1) for _ in range(levels))
            for _ in range(levels)
        )
        self.weight_logits = nn.ModuleList(nn.Conv2d(weight_channels * levels, levels, 1) for _ in range(levels))
        self.output = nn.ModuleList(conv_norm_act(out_channels, out_channels, activation=False, **kwargs) for _ in range(levels))
        self._shapes = {k: ShapeSpec(channels=out_channels, stride=s) for k, s in zip(self.out_names, strides)}
        self.size_divisibility = strides[-1]

    @classmethod
    def from_config(cls, cfg, input_shapes):
        return {
            "input_shapes": input_shapes,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "weight_channels": cfg.MODEL.SEPH.ASFF.WEIGHT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
            "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
        }

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    def fusion_weights(self, target: int, resized: List[torch.Tensor]) -> torch.Tensor:
        """(N, L, H_t, W_t) softmax weights of the L resized sources at level ``target``."""
        feats = [conv(x) for conv, x in zip(self.weight_feat[target], resized)]
        return F.softmax(self.weight_logits[target](torch.cat(feats, dim=1)), dim=1)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """{in_feature: (N, C_l, H_l, W_l)} -> {p<level>: (N, out_channels, H_l, W_l)}."""
        pyramid = self.top_down([features[f] for f in self.in_features])
        outputs = []
        for t, target in enumerate(pyramid):
            resized = []
            for s, source in enumerate(pyramid):
                if s < t:
                    source = self.resize[t][str(s)](source)
                elif s > t:
                    source = F.interpolate(source, size=target.shape[-2:], mode="nearest")
                resized.append(source)
            alpha = self.fusion_weights(t, resized)
            fused = sum(alpha[:, s : s + 1] * x for s, x in enumerate(resized))
            outputs.append(self.output[t](fused))
        return dict(zip(self.out_names, outputs))


@BACKBONE_REGISTRY.register()
def build_seph_asff_backbone(cfg, input_shape: ShapeSpec):
    """ResNet -> extra levels -> hooks around an :class:`ASFF` neck on ``MODEL.FPN.IN_FEATURES``
    (``OUT_CHANNELS``, ``NORM``; ``MODEL.SEPH.ASFF.WEIGHT_CHANNELS``)."""
    return build_hooked_neck_backbone(cfg, input_shape, ASFF)
