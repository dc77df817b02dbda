"""BiFPN neck (EfficientDet-style; docs/components.md#fpn, log rows "bifpn v1/v1_1/v2/v2_1/v2_2").

::

    inputs (e.g. res3..res6) -> conv1x1 + norm (no act) each -> F (finest .. coarsest)
    NUM_CELLS x cell, levels ordered coarse -> fine F_0 .. F_{L-1}:
      top-down:   M_0 = F_0
                  M_i = conv(act(wfuse(up(M_{i-1}), F_i)))                 i = 1 .. L-1
      bottom-up:  O_{L-1} = M_{L-1}
                  O_i = conv(act(wfuse(F_i, pool(O_{i+1}), M_i)))          i = L-2 .. 1
                  O_0 = conv(act(wfuse(pool(O_1), M_0)))
    outputs p<level> = O (finest first), all OUT_CHANNELS wide

``wfuse`` = fast normalised fusion (ReLU-ed weights, +1e-4), ``up`` = nearest resize to the
finer map's size (the log's 2x), ``pool`` = 2x2/2 max-pool (ceil mode), ``conv`` = 3x3 conv +
norm, no activation; ``act`` = ReLU when ``activation`` (the log: "NA", identity).
Input padding rule: images are padded to ``size_divisibility`` (the log's SIZE_ALIGN 128),
so every level is exactly twice the next and up/pool are exact inverses in size.
The bottom-up maps are not added to the outputs.
"""
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import BACKBONE_REGISTRY, ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooked_backbone import build_hooked_neck_backbone
from sephnet.modeling.backbone.tf_fpn import level_of_stride
from sephnet.modeling.backbone.weighted_fusion import FastNormalizedFusion

__all__ = ["BiFPNCell", "BiFPN", "build_seph_bifpn_backbone"]


class BiFPNCell(nn.Module):
    """One top-down + bottom-up pass over L same-width maps (see the module docstring)."""

    def __init__(
        self,
        num_levels: int,
        channels: int,
        *,
        norm: str = "",
        activation: bool = False,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            num_levels: L >= 2.
            channels: C of every map.
            norm: norm after each 3x3 conv ("" = none).
            activation: ReLU between the fusion and the conv.
            norm_groups, norm_eps: parameters of sephnet's norms (EvoNormS0).
        """
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"BiFPNCell: num_levels={num_levels}; expected >= 2.")
        self.num_levels = num_levels
        self.activation = activation

        def conv():
            c = conv_norm_act(channels, channels, kernel_size=3, norm=norm, activation=False,
                              norm_groups=norm_groups, norm_eps=norm_eps)
            weight_init.c2_xavier_fill(c)
            return c

        # index i of the lists = coarse-to-fine position i (td: 1..L-1, bu: 0..L-2)
        self.td_fuse = nn.ModuleList([FastNormalizedFusion(2) for _ in range(num_levels - 1)])
        self.td_conv = nn.ModuleList([conv() for _ in range(num_levels - 1)])
        self.bu_fuse = nn.ModuleList(
            [FastNormalizedFusion(2 if i == 0 else 3) for i in range(num_levels - 1)]
        )
        self.bu_conv = nn.ModuleList([conv() for _ in range(num_levels - 1)])

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.activation else x

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            feats: L tensors ``[N, C, H_i, W_i]``, **coarsest first**.

        Returns:
            L tensors of the same shapes, coarsest first.
        """
        m = [feats[0]]
        for i in range(1, self.num_levels):
            up = F.interpolate(m[-1], size=feats[i].shape[-2:], mode="nearest")
            m.append(self.td_conv[i - 1](self._act(self.td_fuse[i - 1]([up, feats[i]]))))
        o = [None] * self.num_levels
        o[-1] = m[-1]
        for i in range(self.num_levels - 2, -1, -1):
            pooled = F.max_pool2d(o[i + 1], kernel_size=2, stride=2, ceil_mode=True)
            inputs = [pooled, m[0]] if i == 0 else [feats[i], pooled, m[i]]
            o[i] = self.bu_conv[i](self._act(self.bu_fuse[i](inputs)))
        return o


class BiFPN(nn.Module):
    """A feature-dict neck ``{res_l} -> {p_l}``: input projections then ``num_cells`` cells."""

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int,
        num_cells: int = 1,
        norm: str = "",
        activation: bool = False,
        size_divisibility: int = 128,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shapes: shapes of the bottom-up dict.
            in_features: >= 2 inputs, finest first, strides doubling (the log: res3..res6).
            out_channels: C of the projections, cells and outputs (128 in v1, 256 in v2).
            num_cells: repeated cells (2 in v1, 1 in v2).
            norm: norm of the projections and the cell convs ("" = none).
            activation: ReLU before each cell conv (the log: identity).
            size_divisibility: input padding; a multiple of the coarsest input stride.
            norm_groups, norm_eps: parameters of sephnet's norms (EvoNormS0).
        """
        super().__init__()
        missing = [f for f in in_features if f not in input_shapes]
        if len(in_features) < 2 or missing:
            raise ValueError(
                f"BiFPN: in_features={list(in_features)} must name >= 2 bottom-up maps of "
                f"{sorted(input_shapes)}."
            )
        strides = [input_shapes[f].stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"BiFPN: in_features {list(in_features)} have strides {strides}; "
                             "expected each to double the previous.")
        if num_cells < 1:
            raise ValueError(f"BiFPN: num_cells={num_cells}; expected >= 1.")
        if size_divisibility % strides[-1] != 0:
            raise ValueError(
                f"BiFPN: size_divisibility={size_divisibility} must be a multiple of the coarsest "
                f"input stride {strides[-1]}."
            )
        self.in_features = list(in_features)
        self.size_divisibility = size_divisibility
        self.projections = nn.ModuleDict()
        for name in self.in_features:
            proj = conv_norm_act(input_shapes[name].channels, out_channels, kernel_size=1,
                                 norm=norm, activation=False, norm_groups=norm_groups,
                                 norm_eps=norm_eps)
            weight_init.c2_xavier_fill(proj)
            self.projections[name] = proj
        self.cells = nn.ModuleList(
            [
                BiFPNCell(len(in_features), out_channels, norm=norm, activation=activation,
                          norm_groups=norm_groups, norm_eps=norm_eps)
                for _ in range(num_cells)
            ]
        )
        self._out_shapes = {
            f"p{level_of_stride(s)}": ShapeSpec(channels=out_channels, stride=s) for s in strides
        }

    @classmethod
    def from_config(cls, cfg, input_shapes):
        node = cfg.MODEL.SEPH.NECKS.BIFPN
        return dict(
            input_shapes=input_shapes,
            in_features=list(cfg.MODEL.FPN.IN_FEATURES),
            out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
            num_cells=node.NUM_CELLS,
            norm=cfg.MODEL.FPN.NORM,
            activation=node.ACTIVATION.ENABLED,
            size_divisibility=node.SIZE_DIVISIBILITY,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
        )

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """``p<level>`` -> ShapeSpec, finest first."""
        return dict(self._out_shapes)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: bottom-up maps, name -> ``Tensor[N, C_l, H_l, W_l]``.

        Returns:
            ``p<level>`` -> ``Tensor[N, out_channels, H_l, W_l]``.
        """
        feats = [self.projections[n](features[n]) for n in reversed(self.in_features)]
        for cell in self.cells:
            feats = cell(feats)
        return dict(zip(self._out_shapes, reversed(feats)))


@BACKBONE_REGISTRY.register()
def build_seph_bifpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet -> extra levels (res6: ``MODEL.SEPH.NECKS.EXTRA_LEVELS``) -> hooks around a BiFPN.

    Reads ``MODEL.FPN.IN_FEATURES/OUT_CHANNELS/NORM``, ``MODEL.SEPH.NECKS.*`` and
    ``MODEL.SEPH.BACKBONE_HOOKS.*``.
    """
    return build_hooked_neck_backbone(cfg, input_shape, BiFPN)
