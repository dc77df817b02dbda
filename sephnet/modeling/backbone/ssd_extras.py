"""SSD's feature maps: a base network's outputs followed by extra feature layers (Liu et al.
2016, section 2.1 "Multi-scale feature maps for detection").

::

    image -> base (VGG16: conv4_3, fc7; ResNet: MODEL.RESNETS.OUT_FEATURES)
                 last base output -> extra1 -> extra2 -> ... -> extraE

Each extra layer is a 1x1 conv to half its output width, then a ``k x k`` conv with the
given stride and padding, each followed by (the norm and) a ReLU. SSD300's four extra layers
are 512 (3x3/2 pad 1), 256 (3x3/2 pad 1), 256 (3x3/1 pad 0), 256 (3x3/1 pad 0): 19 -> 10 ->
5 -> 3 -> 1; SSD512 adds a fifth stride-2 layer and ends with a 4x4/1 pad 1 conv.
"""
from typing import Dict, Sequence

import torch
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from sephnet.backend import BACKBONE_REGISTRY, Backbone, CfgNode, Conv2d, ShapeSpec
from sephnet.layers.norm import build_norm

__all__ = ["SSDBackbone", "build_seph_ssd_backbone"]


class SSDBackbone(Backbone):
    """A base backbone plus SSD's extra layers; outputs the base's features then ``extra1..E``.

    ``output_shape()`` lists the base's outputs in order of stride, then the extra layers;
    the SSD head predicts on all of them, in this order.
    """

    def __init__(
        self,
        *,
        base: Backbone,
        channels: Sequence[int],
        strides: Sequence[int],
        kernel_sizes: Sequence[int],
        paddings: Sequence[int],
        norm: str = "",
    ):
        """
        Args:
            base: the base network (a detectron2 ``Backbone`` returning a dict of features).
            channels, strides, kernel_sizes, paddings: per extra layer (E entries each), the
                output width, stride, kernel size and padding of its second conv.
            norm: a ``NORM`` name after each extra conv ("" = none, as in the paper).
        """
        super().__init__()
        counts = {len(channels), len(strides), len(kernel_sizes), len(paddings)}
        if len(counts) != 1:
            raise ValueError(
                "SSD extra layers need one channel count, stride, kernel size and padding each; "
                f"got {list(channels)}, {list(strides)}, {list(kernel_sizes)}, {list(paddings)}."
            )
        self.base = base
        base_shapes = sorted(base.output_shape().items(), key=lambda item: item[1].stride)
        self._base_features = [name for name, _ in base_shapes]
        self._shapes = dict(base_shapes)
        in_channels, stride = base_shapes[-1][1].channels, base_shapes[-1][1].stride
        self.extras = nn.ModuleList()
        for index, (width, step, kernel, padding) in enumerate(
            zip(channels, strides, kernel_sizes, paddings), start=1
        ):
            layer = nn.Sequential(
                self._conv(in_channels, width // 2, 1, 1, 0, norm),
                self._conv(width // 2, width, kernel, step, padding, norm),
            )
            self.extras.append(layer)
            in_channels, stride = width, stride * step
            self._shapes[f"extra{index}"] = ShapeSpec(channels=width, stride=stride)
        self._out_features = list(self._shapes)

    @staticmethod
    def _conv(cin: int, cout: int, kernel: int, stride: int, padding: int, norm: str) -> Conv2d:
        layer = Conv2d(
            cin, cout, kernel_size=kernel, stride=stride, padding=padding, bias=not norm,
            norm=build_norm(norm, cout), activation=F.relu,
        )
        weight_init.c2_xavier_fill(layer)
        return layer

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(N, C, H, W)`` -> the base's features then ``extra1..E``, finest first."""
        base_outputs = self.base(x)
        outputs = {name: base_outputs[name] for name in self._base_features}
        x = outputs[self._base_features[-1]]
        for index, layer in enumerate(self.extras, start=1):
            x = layer(x)
            outputs[f"extra{index}"] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)


@BACKBONE_REGISTRY.register()
def build_seph_ssd_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> SSDBackbone:
    """The base named by ``MODEL.SEPH.SSD.BASE_BACKBONE`` (a ``BACKBONE_REGISTRY`` builder,
    e.g. ``build_seph_vgg16_backbone`` or ``build_resnet_backbone``) plus the extra layers of
    ``MODEL.SEPH.SSD.EXTRA_*``."""
    ssd = cfg.MODEL.SEPH.SSD
    base = BACKBONE_REGISTRY.get(ssd.BASE_BACKBONE)(cfg, input_shape)
    return SSDBackbone(
        base=base,
        channels=tuple(ssd.EXTRA_CHANNELS),
        strides=tuple(ssd.EXTRA_STRIDES),
        kernel_sizes=tuple(ssd.EXTRA_KERNEL_SIZES),
        paddings=tuple(ssd.EXTRA_PADDINGS),
        norm=ssd.EXTRA_NORM,
    )
