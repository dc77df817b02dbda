"""FusionBackboneHook: one fused map ``f<l>`` at the finest pyramid level
(docs/components.md#backbone-hooks).

An after-hook: the FPN outputs are kept and a new key is added, named ``f`` + the finest
level (``f3`` for P3..P6; the log's "F3"), which ROI heads may pool from alone
(``MODEL.ROI_HEADS.IN_FEATURES: ["f3"]``) while the RPN keeps using the P levels::

    p3 [N, C, H, W] ------------------------------------+
    p4, p5, p6 -> bilinear resize to (H, W) -> mean ----+-> merge -> conv3x3 -> norm (-> ReLU)
                                                            -> f3 [N, C_out, H, W]
    merge: "concat" -> [N, 2C, H, W];  "sum" -> p3 + mean, [N, C, H, W]

Versions (``MODEL.SEPH.BACKBONE_HOOKS.FUSION.VERSION``): ``"V1"`` concat, C_out = 2C (the
log's 512 for 256-wide FPNs: sephv14_32/33/40-44, bifpnv2, recipe "1)"); ``"V2"`` concat,
C_out = C (sephv14_43*); ``"V3"`` sum, C_out = C. The norm is the hooks' NORM key
(EvoNormS0 in every log row; the original read FPN.NORM, which those rows set to EvoNormS0),
with no activation (the log's FPN.ACTIVATION_FN "NA").

Only the hook as rewritten on 2020-06-15 (bilinear resize + 3x3 conv + norm) exists here; the
earlier 1x1-conv-to-64-channels version is not reproduced. Following docs/components.md#conventions,
the June C3 row "use FuseBackbone" is read as this rewritten version.
"""
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooks.base import (
    BackboneHook,
    check_same_channels,
    pyramid_keys,
    pyramid_level,
)
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

__all__ = ["FUSION_VERSIONS", "FusionBackboneHook"]

# VERSION -> (merge, output channels as a multiple of the input channels C).
FUSION_VERSIONS = {"V1": ("concat", 2), "V2": ("concat", 1), "V3": ("sum", 1)}


@SEPH_BACKBONE_HOOK_REGISTRY.register()
class FusionBackboneHook(BackboneHook):
    """Add ``f<l>``: the finest level merged with the mean of the resized coarser levels."""

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        merge: str = "concat",
        out_channels: int,
        norm: str = "",
        activation: bool = False,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shapes: shapes of the received dict (at least two pyramid levels, equal
                channels C).
            merge: ``"concat"`` ([finest, mean], 2C channels) or ``"sum"`` (finest + mean).
            out_channels: C_out of the 3x3 conv, i.e. of ``f<l>``.
            norm: norm after the conv (a ``NORM`` name); "" = none (the conv then has a bias).
            activation: ReLU after the norm (skipped for norms with their own non-linearity).
            norm_groups, norm_eps: parameters of sephnet's norms (EvoNormS0).
        """
        super().__init__(input_shapes=input_shapes)
        if merge not in ("concat", "sum"):
            raise ValueError(f"FusionBackboneHook: merge={merge!r}; expected 'concat' or 'sum'.")
        self.levels = pyramid_keys(input_shapes)
        if len(self.levels) < 2:
            raise ValueError(
                f"FusionBackboneHook needs >= 2 pyramid levels, got {sorted(input_shapes)}."
            )
        channels = check_same_channels("FusionBackboneHook", input_shapes, self.levels)
        self.merge = merge
        self.out_name = f"f{pyramid_level(self.levels[0])}"
        if self.out_name in input_shapes:
            raise ValueError(f"FusionBackboneHook: the input already has {self.out_name!r}.")
        self.out_channels = out_channels
        self.conv = conv_norm_act(
            2 * channels if merge == "concat" else channels,
            out_channels,
            kernel_size=3,
            norm=norm,
            activation=activation,
            norm_groups=norm_groups,
            norm_eps=norm_eps,
        )
        weight_init.c2_xavier_fill(self.conv)

    @classmethod
    def from_config(cls, cfg, *, input_shapes, bottom_up_shapes=None):
        node = cfg.MODEL.SEPH.BACKBONE_HOOKS
        version = node.FUSION.VERSION
        if version not in FUSION_VERSIONS:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.FUSION.VERSION={version!r}; expected one of "
                f"{sorted(FUSION_VERSIONS)}."
            )
        merge, width = FUSION_VERSIONS[version]
        levels = pyramid_keys(input_shapes)
        channels = input_shapes[levels[0]].channels if levels else 0
        return dict(
            input_shapes=input_shapes,
            merge=merge,
            out_channels=width * channels,
            norm=node.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
        )

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """The input shapes plus ``f<l>``: ``out_channels`` at the finest level's stride."""
        shapes = dict(self._input_shapes)
        stride = shapes[self.levels[0]].stride
        shapes[self.out_name] = ShapeSpec(channels=self.out_channels, stride=stride)
        return shapes

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        bottom_up: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: name -> ``Tensor[N, C, H_k, W_k]``.
            bottom_up: unused.

        Returns:
            ``features`` plus ``f<l>: Tensor[N, C_out, H_0, W_0]`` (finest level's size).
        """
        finest = features[self.levels[0]]
        size = finest.shape[-2:]
        others = [
            F.interpolate(features[k], size=size, mode="bilinear", align_corners=False)
            for k in self.levels[1:]
        ]
        mean = torch.stack(others).mean(dim=0)
        merged = torch.cat([finest, mean], dim=1) if self.merge == "concat" else finest + mean
        out = dict(features)
        out[self.out_name] = self.conv(merged)
        return out
