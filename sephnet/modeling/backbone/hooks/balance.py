"""BalanceBackboneHook: Libra-R-CNN-style balanced refinement of the pyramid
(docs/components.md#backbone-hooks).

::

    P3 ... P6 --bilinear resize to the reference level (index 1: P4)--> mean
         -> conv3x3 (C -> C) -> norm (no act) -> R [N, C, H_ref, W_ref]
    out_k = P_k + bilinear_resize(R, size of P_k)                      (V1)
    out_k = concat(P_k + resize(R), conv1x1(C_k))  -> 2C channels      (V2)

* ``"V1"`` (log sephv14_4, bifpn v1_1, recipe "2)"; with the two-way FPN as the RPN-only hook);
* ``"V2"`` (sephv14_3): also concatenates a 1x1 projection (bias, no norm) to C channels of
  the bottom-up map of the same stride, so **every pyramid level doubles its channels**
  (RPN and ROI heads then see 2C). A level without a bottom-up map of its stride (P6 when
  the ResNet stops at C5) takes the coarsest bottom-up map, nearest-resized to its size;
* the log's ``V3`` (sephv26) is V1 applied to the RPN's inputs only: set
  ``MODEL.SEPH.BACKBONE_HOOKS.RPN: BalanceBackboneHook`` with VERSION "V1".

Resizing is bilinear with ``align_corners=False``.
"""
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooks.base import (
    BackboneHook,
    check_same_channels,
    pyramid_keys,
)
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

__all__ = ["BALANCE_VERSIONS", "BalanceBackboneHook"]

# VERSION -> concat_bottom_up.
BALANCE_VERSIONS = {"V1": False, "V2": True}


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@SEPH_BACKBONE_HOOK_REGISTRY.register()
class BalanceBackboneHook(BackboneHook):
    """Add a refined average of all levels back to each level (V1); V2 also concats C_k."""

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        reference_index: int = 1,
        concat_bottom_up: bool = False,
        bottom_up_shapes: Optional[Dict[str, ShapeSpec]] = None,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shapes: shapes of the received dict (pyramid levels of equal channels C).
            reference_index: index, finest first, of the level whose size the mean is taken at.
            concat_bottom_up: V2; needs ``bottom_up_shapes``.
            bottom_up_shapes: shapes of the bottom-up maps passed to ``forward`` (V2).
            norm: norm after the refining conv ("" = none).
            norm_groups, norm_eps: parameters of sephnet's norms (EvoNormS0).
        """
        super().__init__(input_shapes=input_shapes)
        self.levels = pyramid_keys(input_shapes)
        if not 0 <= reference_index < len(self.levels):
            raise ValueError(
                f"BalanceBackboneHook: reference_index={reference_index} is outside the "
                f"{len(self.levels)} pyramid levels {self.levels}."
            )
        channels = check_same_channels("BalanceBackboneHook", input_shapes, self.levels)
        self.reference_index = reference_index
        self.refine = conv_norm_act(
            channels, channels, kernel_size=3, norm=norm, activation=False,
            norm_groups=norm_groups, norm_eps=norm_eps,
        )
        weight_init.c2_xavier_fill(self.refine)
        self.sources: Dict[str, str] = {}
        self.projections = nn.ModuleDict()
        if concat_bottom_up:
            if not bottom_up_shapes:
                raise ValueError(
                    "BalanceBackboneHook V2 (concat_bottom_up) needs the bottom-up maps after the "
                    "neck, which this backbone does not expose; use a sephnet neck builder "
                    "(e.g. MODEL.BACKBONE.NAME 'build_seph_tf_fpn_backbone')."
                )
            self.sources = self._match_bottom_up(bottom_up_shapes)
            for key in self.levels:
                proj = nn.Conv2d(bottom_up_shapes[self.sources[key]].channels, channels, 1)
                weight_init.c2_xavier_fill(proj)
                self.projections[key] = proj

    def _match_bottom_up(self, bottom_up_shapes: Dict[str, ShapeSpec]) -> Dict[str, str]:
        candidates = pyramid_keys(bottom_up_shapes)
        if not candidates:
            raise ValueError(
                f"BalanceBackboneHook V2: no bottom-up pyramid level in {sorted(bottom_up_shapes)}."
            )
        sources = {}
        for key in self.levels:
            stride = self._input_shapes[key].stride
            same = [c for c in candidates if bottom_up_shapes[c].stride == stride]
            finer = [c for c in candidates if bottom_up_shapes[c].stride <= stride]
            sources[key] = same[0] if same else (finer[-1] if finer else candidates[0])
        return sources

    @classmethod
    def from_config(cls, cfg, *, input_shapes, bottom_up_shapes=None):
        node = cfg.MODEL.SEPH.BACKBONE_HOOKS
        version = node.BALANCE.VERSION
        if version not in BALANCE_VERSIONS:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.BALANCE.VERSION={version!r}; expected one of "
                f"{sorted(BALANCE_VERSIONS)} (the log's V3 is V1 set as the RPN hook)."
            )
        return dict(
            input_shapes=input_shapes,
            reference_index=node.BALANCE.REFERENCE_INDEX,
            concat_bottom_up=BALANCE_VERSIONS[version],
            bottom_up_shapes=bottom_up_shapes,
            norm=node.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
        )

    @property
    def needs_bottom_up(self) -> bool:
        return bool(self.sources)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Input shapes; V2 doubles the channels of every pyramid level."""
        shapes = dict(self._input_shapes)
        if self.sources:
            for key in self.levels:
                s = shapes[key]
                shapes[key] = ShapeSpec(channels=2 * s.channels, stride=s.stride)
        return shapes

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        bottom_up: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: name -> ``Tensor[N, C, H_k, W_k]``.
            bottom_up: the bottom-up maps (V2 only), name -> ``Tensor[N, C'_k, H'_k, W'_k]``.

        Returns:
            The same keys; pyramid levels ``[N, C, H_k, W_k]`` (V1) or ``[N, 2C, H_k, W_k]`` (V2).
        """
        ref_size = features[self.levels[self.reference_index]].shape[-2:]
        mean = torch.stack([_resize(features[k], ref_size) for k in self.levels]).mean(dim=0)
        refined = self.refine(mean)
        out = dict(features)
        for key in self.levels:
            x = features[key]
            y = x + _resize(refined, x.shape[-2:])
            if self.sources:
                if bottom_up is None:
                    raise ValueError("BalanceBackboneHook V2: forward needs the bottom-up maps.")
                src = bottom_up[self.sources[key]]
                if tuple(src.shape[-2:]) != tuple(x.shape[-2:]):
                    src = F.interpolate(src, size=x.shape[-2:], mode="nearest")
                y = torch.cat([y, self.projections[key](src)], dim=1)
            out[key] = y
        return out
