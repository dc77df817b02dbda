"""DetNet-59 (Li et al., "DetNet: A Backbone network for Object Detection", 2018).

::

    stem, res2, res3, res4      as ResNet-50 (3, 4, 6 bottleneck blocks)  strides 4, 8, 16
    res5, res6                  3 DetNetBlocks each, stride 16 (no downsampling):
        DetNetBlock: conv1 1x1 -> conv2 3x3 dilation 2 -> conv3 1x1 (+ norm each)
                     + shortcut: a 1x1-conv projection + norm in the first block of a stage
                       (the paper's block B, even though channels do not change), identity
                       in the others (block A); ReLU after the sum

Keeping res5/res6 at stride 16 keeps small objects' spatial detail while dilation grows the
receptive field; the paper fixes their bottleneck width at 256 (outputs 4 x 256 here, like a
ResNet bottleneck). State-dict names follow detectron2's ResNet (``stem.conv1``, ``res2.0.conv1``,
..., ``res6.2.conv3``), so an ImageNet-pretrained DetNet converted to these names loads with
``MODEL.WEIGHTS`` like any detectron2 checkpoint.

``DetNetFPN`` is the paper's FPN on res2..res6: 1x1 laterals, top-down sums after a nearest
resize to the finer map's size (a 2x upsampling between res2/res3/res4, none between the
stride-16 stages), 3x3 outputs p2..p6 with strides 4, 8, 16, 16, 16.
"""
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    BACKBONE_REGISTRY,
    Backbone,
    BasicStem,
    BottleneckBlock,
    CNNBlockBase,
    Conv2d,
    ShapeSpec,
    get_norm,
)
from sephnet.modeling.backbone.hooked_backbone import HookedBackbone
from sephnet.modeling.backbone.hooks.base import pyramid_level
from sephnet.modeling.backbone.top_down import TopDownPyramid

__all__ = ["DetNetBlock", "DetNet", "DetNetFPN", "build_seph_detnet_backbone", "build_seph_detnet_fpn_backbone"]

_STAGE_NAMES = ("res2", "res3", "res4", "res5", "res6")


class DetNetBlock(CNNBlockBase):
    """Dilated bottleneck at stride 1 (see the module docstring).

    Args:
        in_channels, out_channels: channels of the block.
        bottleneck_channels: channels of the dilated 3x3 conv.
        projection: 1x1-conv projection shortcut (block B) instead of the identity (block A).
        dilation: of the 3x3 conv (2 in the paper).
        norm: norm of every conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        projection: bool,
        dilation: int = 2,
        norm="BN",
    ):
        super().__init__(in_channels, out_channels, 1)
        if not projection and in_channels != out_channels:
            raise ValueError(
                f"DetNetBlock without projection needs in_channels == out_channels, got "
                f"{in_channels} -> {out_channels}"
            )
        self.shortcut = None
        if projection:
            self.shortcut = Conv2d(in_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, bias=False, norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            3,
            padding=dilation,
            dilation=dilation,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


class DetNet(Backbone):
    """DetNet-59: a ResNet-50 trunk to res4, then two dilated stride-16 stages res5, res6.

    Args:
        stem_channels, res2_channels: ResNet-50 widths (64, 256); res3/res4 double them.
        dilated_bottleneck_channels: bottleneck width of res5/res6 (256 in the paper).
        dilated_out_channels: output width of res5/res6 (4 x the bottleneck by default).
        norm: norm of every conv; stride_in_1x1: as detectron2's ResNet.
        out_features: stages returned, among "stem", "res2".."res6".
        freeze_at: freeze the stem (>= 1) and res2..res{freeze_at} (as detectron2's ResNet).
    """

    def __init__(
        self,
        *,
        stem_channels: int = 64,
        res2_channels: int = 256,
        dilated_bottleneck_channels: int = 256,
        dilated_out_channels: int = 1024,
        norm="BN",
        stride_in_1x1: bool = True,
        out_features: List[str] = ("res4", "res5", "res6"),
        freeze_at: int = 0,
    ):
        super().__init__()
        unknown = [f for f in out_features if f not in ("stem",) + _STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(f"DetNet out_features {list(out_features)}: expected names among stem, res2..res6")
        self.stem = BasicStem(3, stem_channels, norm=norm)
        shapes = {"stem": ShapeSpec(channels=stem_channels, stride=4)}
        channels, width, stride = stem_channels, res2_channels, 4
        for name, blocks, first_stride in (("res2", 3, 1), ("res3", 4, 2), ("res4", 6, 2)):
            stage = [
                BottleneckBlock(
                    channels if i == 0 else width,
                    width,
                    bottleneck_channels=width // 4,
                    stride=first_stride if i == 0 else 1,
                    norm=norm,
                    stride_in_1x1=stride_in_1x1,
                )
                for i in range(blocks)
            ]
            self.add_module(name, nn.Sequential(*stage))
            channels, stride = width, stride * first_stride
            shapes[name] = ShapeSpec(channels=width, stride=stride)
            width *= 2
        for name in ("res5", "res6"):
            stage = [
                DetNetBlock(
                    channels if i == 0 else dilated_out_channels,
                    dilated_out_channels,
                    bottleneck_channels=dilated_bottleneck_channels,
                    projection=i == 0,
                    norm=norm,
                )
                for i in range(3)
            ]
            self.add_module(name, nn.Sequential(*stage))
            channels = dilated_out_channels
            shapes[name] = ShapeSpec(channels=channels, stride=16)
        self._out_features = list(out_features)
        self._out_feature_channels = {k: shapes[k].channels for k in out_features}
        self._out_feature_strides = {k: shapes[k].stride for k in out_features}
        if freeze_at >= 1:
            self.stem.freeze()
        for index, name in enumerate(_STAGE_NAMES, start=2):
            if freeze_at >= index:
                for block in getattr(self, name):
                    block.freeze()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) -> the requested stages (see ``output_shape``)."""
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        # Stages after the last requested one are skipped (they are still built, so that
        # checkpoints keep every name).
        last = max((_STAGE_NAMES.index(f) for f in self._out_features if f != "stem"), default=-1)
        for name in _STAGE_NAMES[: last + 1]:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


class DetNetFPN(nn.Module):
    """FPN neck over inputs whose strides may repeat (see the module docstring).

    Args:
        input_shapes: the bottom-up dict's shapes.
        in_features: inputs finest first, e.g. res2..res6; output ``p<level>`` per input.
        out_channels: C of every output.
        norm: norm of the lateral and output convs ("" = none, convs with bias).
    """

    def __init__(self, *, input_shapes: Dict[str, ShapeSpec], in_features: List[str], out_channels: int, norm=""):
        super().__init__()
        strides = [input_shapes[f].stride for f in in_features]
        if strides != sorted(strides):
            raise ValueError(f"DetNetFPN inputs {in_features} must be ordered finest first, strides {strides}")
        self.in_features = list(in_features)
        self.out_names = [f"p{pyramid_level(f)}" for f in in_features]
        self.pyramid = TopDownPyramid([input_shapes[f].channels for f in in_features], out_channels, norm=norm)
        self._shapes = {
            out: ShapeSpec(channels=out_channels, stride=input_shapes[f].stride)
            for out, f in zip(self.out_names, in_features)
        }
        self.size_divisibility = max(strides)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """{in_feature: (N, C_l, H_l, W_l)} -> {p<level>: (N, out_channels, H_l, W_l)}."""
        return dict(zip(self.out_names, self.pyramid([features[f] for f in self.in_features])))


def _detnet(cfg, input_shape: ShapeSpec, out_features) -> DetNet:
    res, node = cfg.MODEL.RESNETS, cfg.MODEL.SEPH.DETNET
    if input_shape.channels != 3:
        raise ValueError(f"DetNet takes 3-channel images, got {input_shape.channels} channels")
    return DetNet(
        stem_channels=res.STEM_OUT_CHANNELS,
        res2_channels=res.RES2_OUT_CHANNELS,
        dilated_bottleneck_channels=node.BOTTLENECK_CHANNELS,
        dilated_out_channels=node.OUT_CHANNELS,
        norm=res.NORM,
        stride_in_1x1=res.STRIDE_IN_1X1,
        out_features=out_features,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_seph_detnet_backbone(cfg, input_shape: ShapeSpec) -> DetNet:
    """DetNet-59 from ``MODEL.RESNETS`` (NORM, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS,
    STRIDE_IN_1X1, OUT_FEATURES among stem/res2..res6), ``MODEL.SEPH.DETNET`` and
    ``MODEL.BACKBONE.FREEZE_AT``."""
    return _detnet(cfg, input_shape, cfg.MODEL.RESNETS.OUT_FEATURES)


@BACKBONE_REGISTRY.register()
def build_seph_detnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> HookedBackbone:
    """DetNet-59 + :class:`DetNetFPN` on ``MODEL.FPN.IN_FEATURES`` (e.g. res2..res6) with
    ``MODEL.FPN.OUT_CHANNELS`` / ``NORM``; outputs p2..p6 (strides 4, 8, 16, 16, 16)."""
    bottom_up = _detnet(cfg, input_shape, cfg.MODEL.FPN.IN_FEATURES)
    neck = DetNetFPN(
        input_shapes=bottom_up.output_shape(),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
    )
    return HookedBackbone(bottom_up=bottom_up, neck=neck)
