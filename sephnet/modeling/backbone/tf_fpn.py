"""The log's TF-Object-Detection-API-style FPN (docs/components.md#fpn) as a neck, and its builder.

::

    C_S (last input) -> conv1x1 (bias) ----------------------> fused_S -> conv3x3+norm -> P_S
    C_l, l < S       -> conv1x1 (bias) = lat_l --+
    fused_{l+1} -> nearest resize to C_l's size --+-> fuse -> fused_l -> conv3x3+norm -> P_l
    C_S -> [conv3x3/2 + norm] x NUM_TOP_LEVELS --------------------------> P_{S+1}, ...

    fuse ("FUSE_TYPE"): "sum" td + lat | "avg" (td + lat) / 2 | "concat" [td, lat] (widths
    grow down the chain) | "mix_fusion" [lat[:, :m], td[:, m:] + lat[:, m:]] (m = 32 in the
    log, sephv14_8) | "wsum" fast normalised fusion of (td, lat) with weights init 1

Differences from detectron2's FPN: laterals have a bias and no norm; the top-down path carries
the fused map, not the output; the top levels start from the raw C_S (the log's P6 from C5).
Input selection: ``in_features`` (e.g. res2..res5 for the log's "P2 output", res3..res5 for
"P3 output"); outputs are named ``p<level>`` by stride, and consumers select levels with their
own IN_FEATURES (``MODEL.ROI_HEADS.IN_FEATURES: ["p3"]`` pools from P3 only).
No activation follows the output norm (the log's FPN.ACTIVATION_FN "NA" in every row).
"""
import math
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import BACKBONE_REGISTRY, ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooked_backbone import build_hooked_neck_backbone
from sephnet.modeling.backbone.seph_fpn import LastLevelStridedConvs
from sephnet.modeling.backbone.weighted_fusion import FastNormalizedFusion

__all__ = ["FUSE_TYPES", "TFStyleFPN", "build_seph_tf_fpn_backbone"]

FUSE_TYPES = ("sum", "avg", "concat", "mix_fusion", "wsum")


def level_of_stride(stride: int) -> int:
    """log2 of a power-of-two stride."""
    level = int(round(math.log2(stride)))
    if 2**level != stride:
        raise ValueError(f"stride {stride} is not a power of two.")
    return level


class TFStyleFPN(nn.Module):
    """A feature-dict neck: ``{res_l: C_l} -> {p_l: P_l}`` (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int,
        fuse_type: str = "sum",
        num_top_levels: int = 1,
        mix_fusion_channels: int = 32,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shapes: shapes of the bottom-up dict.
            in_features: the inputs, finest first, strides doubling (e.g. res3, res4, res5).
            out_channels: C of every output.
            fuse_type: one of :data:`FUSE_TYPES`.
            num_top_levels: 3x3/2 conv levels made from the last input (0 = none).
            mix_fusion_channels: lateral-only channels of "mix_fusion" (< out_channels).
            norm: norm of the output and top-level convs (a ``NORM`` name, "" = none).
            norm_groups, norm_eps: parameters of sephnet's norms (EvoNormS0).
        """
        super().__init__()
        if fuse_type not in FUSE_TYPES:
            raise ValueError(f"TFStyleFPN: fuse_type={fuse_type!r}; expected one of {FUSE_TYPES}.")
        missing = [f for f in in_features if f not in input_shapes]
        if not in_features or missing:
            raise ValueError(
                f"TFStyleFPN: in_features={list(in_features)} must be non-empty and produced by "
                f"the bottom-up, which has {sorted(input_shapes)}."
            )
        strides = [input_shapes[f].stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"TFStyleFPN: in_features {list(in_features)} have strides {strides}; "
                             "expected each to double the previous.")
        if fuse_type == "mix_fusion" and not 0 < mix_fusion_channels < out_channels:
            raise ValueError(
                f"TFStyleFPN: mix_fusion_channels={mix_fusion_channels}; expected 0 < it < "
                f"out_channels={out_channels}."
            )
        if num_top_levels < 0:
            raise ValueError(f"TFStyleFPN: num_top_levels={num_top_levels}; expected >= 0.")
        self.in_features = list(in_features)
        self.fuse_type = fuse_type
        self.mix_fusion_channels = mix_fusion_channels
        norm_kw = dict(norm=norm, norm_groups=norm_groups, norm_eps=norm_eps)
        self.laterals = nn.ModuleDict()
        self.outputs = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        width = 0  # channels of the fused map carried down the chain
        for i, name in enumerate(reversed(self.in_features)):
            lateral = nn.Conv2d(input_shapes[name].channels, out_channels, 1)
            weight_init.c2_xavier_fill(lateral)
            self.laterals[name] = lateral
            width = out_channels if i == 0 or fuse_type != "concat" else width + out_channels
            output = conv_norm_act(width, out_channels, kernel_size=3, activation=False, **norm_kw)
            weight_init.c2_xavier_fill(output)
            self.outputs[name] = output
            if i > 0 and fuse_type == "wsum":
                self.fusions[name] = FastNormalizedFusion(2)
        self.top_block = None
        if num_top_levels > 0:
            last = self.in_features[-1]
            self.top_block = LastLevelStridedConvs(
                input_shapes[last].channels, out_channels, num_levels=num_top_levels,
                in_feature=last, **norm_kw,
            )
        self._out_shapes = {}
        for name in self.in_features:
            stride = input_shapes[name].stride
            self._out_shapes[f"p{level_of_stride(stride)}"] = ShapeSpec(
                channels=out_channels, stride=stride
            )
        for k in range(1, num_top_levels + 1):
            stride = strides[-1] * 2**k
            self._out_shapes[f"p{level_of_stride(stride)}"] = ShapeSpec(
                channels=out_channels, stride=stride
            )
        self.size_divisibility = max(s.stride for s in self._out_shapes.values())

    @classmethod
    def from_config(cls, cfg, input_shapes):
        node = cfg.MODEL.SEPH.NECKS
        return dict(
            input_shapes=input_shapes,
            in_features=list(cfg.MODEL.FPN.IN_FEATURES),
            out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
            fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
            num_top_levels=node.TF_FPN.NUM_TOP_LEVELS,
            mix_fusion_channels=node.TF_FPN.MIX_FUSION_CHANNELS,
            norm=cfg.MODEL.FPN.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
        )

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """``p<level>`` -> ShapeSpec, finest first, then the top levels."""
        return dict(self._out_shapes)

    def _fuse(self, name: str, td: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        if self.fuse_type == "sum":
            return td + lat
        if self.fuse_type == "avg":
            return (td + lat) / 2
        if self.fuse_type == "concat":
            return torch.cat([td, lat], dim=1)
        if self.fuse_type == "wsum":
            return self.fusions[name]([td, lat])
        m = self.mix_fusion_channels
        return torch.cat([lat[:, :m], td[:, m:] + lat[:, m:]], dim=1)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: bottom-up maps, name -> ``Tensor[N, C_l, H_l, W_l]``.

        Returns:
            ``p<level>`` -> ``Tensor[N, out_channels, H_l, W_l]``, as ``output_shape()``.
        """
        outputs = []
        fused = None
        for name in reversed(self.in_features):
            lat = self.laterals[name](features[name])
            if fused is None:
                fused = lat
            else:
                td = F.interpolate(fused, size=lat.shape[-2:], mode="nearest")
                fused = self._fuse(name, td, lat)
            outputs.insert(0, self.outputs[name](fused))
        if self.top_block is not None:
            outputs.extend(self.top_block(features[self.top_block.in_feature]))
        return dict(zip(self._out_shapes, outputs))


@BACKBONE_REGISTRY.register()
def build_seph_tf_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet -> (extra levels) -> before hook -> :class:`TFStyleFPN` -> after/RPN hooks.

    Reads ``MODEL.RESNETS.*``, ``MODEL.FPN.IN_FEATURES/OUT_CHANNELS/NORM/FUSE_TYPE``,
    ``MODEL.SEPH.NECKS.*`` and ``MODEL.SEPH.BACKBONE_HOOKS.*``.

    Returns:
        A :class:`sephnet.modeling.backbone.hooked_backbone.HookedBackbone`.
    """
    return build_hooked_neck_backbone(cfg, input_shape, TFStyleFPN)
