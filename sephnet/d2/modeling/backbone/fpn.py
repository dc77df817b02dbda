"""Feature Pyramid Network (Lin et al., "Feature Pyramid Networks for Object Detection").

Topology for in_features res2..res5 with a ``LastLevelMaxPool`` top block::

    res5 -> fpn_lateral5 --------------------------+-> fpn_output5 -> p5 -> maxpool(k1,s2) -> p6
                                                   | 2x nearest
    res4 -> fpn_lateral4 -> (+) <------------------+
                             +-> fpn_output4 -> p4
                             | 2x nearest
    res3 -> fpn_lateral3 -> (+) ... -> p3
    res2 -> fpn_lateral2 -> (+) ... -> p2

Output ``p<k>`` has stride 2**k; all outputs have ``out_channels`` channels.
"""

import math
from typing import Dict, List, Optional, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from sephnet.d2.layers import Conv2d, ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = [
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
]


def _assert_strides_are_log2_contiguous(strides: Sequence[int]) -> None:
    """Check that every stride is twice the previous one.

    Raises:
        ValueError: naming the first offending pair.
    """
    for prev, cur in zip(strides[:-1], strides[1:]):
        if cur != 2 * prev:
            raise ValueError(
                f"Strides {cur} {prev} are not log2 contiguous (got strides {list(strides)})"
            )


class FPN(Backbone):
    """Top-down pyramid with lateral connections over a bottom-up :class:`Backbone`.

    Args:
        bottom_up: backbone producing ``in_features``.
        in_features: contiguous bottom-up features, fine to coarse (e.g. ["res2", ..., "res5"]).
        out_channels: channels of every pyramid output.
        norm: norm for the lateral and output convs ("" = none, and then the convs have biases).
        top_block: optional module producing extra coarser levels; it must have ``num_levels``
            and ``in_feature`` (a bottom-up feature name or an FPN output name like "p5").
        fuse_type: "sum" or "avg" for merging lateral and top-down features.

    Raises:
        TypeError: if ``bottom_up`` is not a Backbone.
        ValueError: for empty ``in_features``, non-contiguous strides or an unknown fuse type.
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: Sequence[str],
        out_channels: int,
        norm="",
        top_block: Optional[nn.Module] = None,
        fuse_type: str = "sum",
    ):
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"FPN bottom_up must be a Backbone, got {type(bottom_up).__name__}")
        if not in_features:
            raise ValueError(f"FPN in_features must not be empty, got {in_features!r}")
        if fuse_type not in ("avg", "sum"):
            raise ValueError(f"FPN fuse_type must be 'sum' or 'avg', got {fuse_type!r}")

        input_shapes = bottom_up.output_shape()
        strides = [input_shapes[f].stride for f in in_features]
        in_channels = [input_shapes[f].channels for f in in_features]
        _assert_strides_are_log2_contiguous(strides)

        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for stride, c_in in zip(strides, in_channels):
            lateral = Conv2d(
                c_in, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(norm, out_channels)
            )
            output = Conv2d(
                out_channels,
                out_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            stage = int(math.log2(stride))
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Coarse-to-fine order, the order of the top-down pass.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up

        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if self.top_block is not None:
            last_stage = int(math.log2(strides[-1]))
            for k in range(last_stage + 1, last_stage + 1 + self.top_block.num_levels):
                self._out_feature_strides[f"p{k}"] = 2**k
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        """The coarsest input stride: the top-down upsampling needs exact 2x size ratios."""
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) images (H, W multiples of ``size_divisibility``) -> {"p2": ..., "p6": ...}.

        Returns:
            dict of (N, out_channels, H / 2**k, W / 2**k) tensors, fine to coarse.
        """
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for idx in range(1, len(self.lateral_convs)):
            lateral = self.lateral_convs[idx](bottom_up_features[self.in_features[-idx - 1]])
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = lateral + top_down
            if self._fuse_type == "avg":
                prev /= 2
            results.insert(0, self.output_convs[idx](prev))

        if self.top_block is not None:
            name = self.top_block.in_feature
            if name in bottom_up_features:
                top_in = bottom_up_features[name]
            else:
                top_in = results[self._out_features.index(name)]
            results.extend(self.top_block(top_in))
        assert len(results) == len(self._out_features)
        return dict(zip(self._out_features, results))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


class LastLevelMaxPool(nn.Module):
    """Extra level P6 = max_pool(P5, kernel 1, stride 2) (subsampling), as in the FPN paper."""

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(N, C, H, W) -> [(N, C, ceil(H/2), ceil(W/2))]."""
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """RetinaNet's extra levels: P6 = conv3x3/2(C5 or P5), P7 = conv3x3/2(relu(P6)).

    Args:
        in_channels: channels of ``in_feature``.
        out_channels: channels of P6 and P7.
        in_feature: input feature name ("res5" for C5, "p5" for P5).
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            weight_init.c2_xavier_fill(module)

    def forward(self, c5: torch.Tensor) -> List[torch.Tensor]:
        """(N, in_channels, H, W) -> [P6, P7]."""
        p6 = self.p6(c5)
        return [p6, self.p7(F.relu(p6))]


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN (MODEL.FPN.IN_FEATURES/OUT_CHANNELS/NORM/FUSE_TYPE) + P6 by max pooling."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN + P6/P7 computed from res5 (RetinaNet)."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(bottom_up.output_shape()["res5"].channels, out_channels),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
