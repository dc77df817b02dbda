"""SSD's VGG16 base (Liu et al. 2016, section 3 "Base network"; Simonyan & Zisserman 2015).

::

    conv1_1..1_2 (w1)   -> max 2x2/2
    conv2_1..2_2 (w2)   -> max 2x2/2
    conv3_1..3_3 (w3)   -> max 2x2/2 (every 2x2 pool in ceil mode: 75 -> 38 at 300 px)
    conv4_1..4_3 (w4)   -> L2Norm ("conv4_3" output, stride 8)
                        -> max 2x2/2
    conv5_1..5_3 (w5)   -> max 3x3/1 pad 1 (pool5 keeps the resolution)
    fc6: 3x3 conv, dilation 6 (the "atrous" fc6 of the reduced VGG16), fc7: 1x1 conv
                        -> "fc7" output (stride 16)

Every conv is 3x3 (pad 1) + ReLU unless stated. Widths ``w1..w5`` are VGG16's 64, 128,
256, 512, 512 and fc6/fc7's 1024 by default (``MODEL.SEPH.VGG``). Parameter names follow the
paper's layer names (``conv4_3.weight``, ``fc7.bias``, ``conv4_3_norm.weight``), so an
ImageNet VGG16 is loaded by renaming its convs to these names (fc6/fc7 subsampled as the
paper did).
"""
from typing import Dict, List, Sequence

import torch
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from sephnet.backend import BACKBONE_REGISTRY, Backbone, CfgNode, Conv2d, ShapeSpec
from sephnet.layers.l2norm import L2Norm
from sephnet.layers.norm import build_norm

__all__ = ["VGG16", "build_seph_vgg16_backbone"]

_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
_POOLED_AFTER = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")  # 2x2/2 max pools, ceil mode


class VGG16(Backbone):
    """VGG16 up to fc7 as convolutions, with outputs ``conv4_3`` (L2-normalised) and ``fc7``."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        fc_width: int = 1024,
        fc6_dilation: int = 6,
        l2norm_scale: float = 20.0,
        norm: str = "",
    ):
        """
        Args:
            in_channels: channels of the input image.
            widths: output channels of the convs of each of the five stages.
            fc_width: output channels of fc6 and fc7.
            fc6_dilation: dilation (and padding) of fc6's 3x3 conv.
            l2norm_scale: initial per-channel scale of conv4_3's L2Norm.
            norm: a ``NORM`` name put after every conv ("" = none, as VGG16; "BN" gives
                VGG16-BN, which trains from scratch more easily).
        """
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"VGG16 needs 5 stage widths; got {list(widths)}.")

        def conv(cin: int, cout: int, **kwargs) -> Conv2d:
            layer = Conv2d(
                cin, cout, bias=not norm, norm=build_norm(norm, cout), activation=F.relu, **kwargs
            )
            weight_init.c2_msra_fill(layer)
            return layer

        self._conv_names: List[str] = []
        channels = in_channels
        for stage, (count, width) in enumerate(zip(_CONVS_PER_STAGE, widths), start=1):
            for index in range(1, count + 1):
                name = f"conv{stage}_{index}"
                self.add_module(name, conv(channels, width, kernel_size=3, padding=1))
                self._conv_names.append(name)
                channels = width
        self.conv4_3_norm = L2Norm(widths[3], scale=l2norm_scale)
        self.fc6 = conv(channels, fc_width, kernel_size=3, padding=fc6_dilation, dilation=fc6_dilation)
        self.fc7 = conv(fc_width, fc_width, kernel_size=1)
        self._out_features = ["conv4_3", "fc7"]
        self._out_feature_channels = {"conv4_3": widths[3], "fc7": fc_width}
        self._out_feature_strides = {"conv4_3": 8, "fc7": 16}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(N, C, H, W)`` -> ``{"conv4_3": (N, w4, ~H/8, ~W/8), "fc7": (N, fc, ~H/16, ~W/16)}``."""
        outputs = {}
        for name in self._conv_names:
            x = getattr(self, name)(x)
            if name == "conv4_3":
                outputs["conv4_3"] = self.conv4_3_norm(x)
            if name in _POOLED_AFTER:
                x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
        x = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)  # pool5
        outputs["fc7"] = self.fc7(self.fc6(x))
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_seph_vgg16_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> VGG16:
    """SSD's VGG16 base from ``MODEL.SEPH.VGG.*``."""
    vgg = cfg.MODEL.SEPH.VGG
    return VGG16(
        in_channels=input_shape.channels,
        widths=tuple(vgg.WIDTHS),
        fc_width=vgg.FC_WIDTH,
        fc6_dilation=vgg.FC6_DILATION,
        l2norm_scale=vgg.L2NORM_SCALE,
        norm=vgg.NORM,
    )
