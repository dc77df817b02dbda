"""Two-way FPN, the log's "wtwfpn" (docs/components.md#fpn): one FPN for the RPN, one for ROIs.

::

                      +-> TFStyleFPN "rpn" (FPN_a) -> (RPN hook) -> RPN
    bottom-up {res*} -+
                      +-> TFStyleFPN "roi" (FPN_b) ----------------> ROI heads

Two independent :class:`~sephnet.modeling.backbone.tf_fpn.TFStyleFPN` with the same
structure (log v1: fuse "sum"; v1_1: "wsum"; inputs res3..res6, no top levels). ``forward``
returns the pair ``(rpn_features, roi_features)``; the backbone wrapper passes it on and
``SephGeneralizedRCNN`` routes it. The log's FPN_a hook (BalanceBackboneHook) is the
wrapper's RPN hook.
"""
from typing import Dict, Tuple

import torch
from torch import nn

from sephnet.backend import BACKBONE_REGISTRY, ShapeSpec, configurable
from sephnet.modeling.backbone.hooked_backbone import build_hooked_neck_backbone
from sephnet.modeling.backbone.tf_fpn import TFStyleFPN

__all__ = ["TwoWayFPN", "build_seph_two_way_fpn_backbone"]


class TwoWayFPN(nn.Module):
    """Two FPNs on the same inputs; ``forward`` returns ``(rpn_features, roi_features)``."""

    two_way = True

    @configurable
    def __init__(self, *, rpn_fpn: TFStyleFPN, roi_fpn: TFStyleFPN):
        """
        Args:
            rpn_fpn: the FPN whose outputs feed the proposal generator (FPN_a).
            roi_fpn: the FPN whose outputs feed the ROI heads (FPN_b); same output shapes.
        """
        super().__init__()
        if rpn_fpn.output_shape() != roi_fpn.output_shape():
            raise ValueError(
                f"TwoWayFPN: the two FPNs declare different outputs {rpn_fpn.output_shape()} "
                f"and {roi_fpn.output_shape()}."
            )
        self.rpn_fpn = rpn_fpn
        self.roi_fpn = roi_fpn
        self.size_divisibility = max(rpn_fpn.size_divisibility, roi_fpn.size_divisibility)

    @classmethod
    def from_config(cls, cfg, input_shapes: Dict[str, ShapeSpec]):
        # Two TFStyleFPNs from the same keys (MODEL.FPN.*, MODEL.SEPH.NECKS.TF_FPN.*).
        return dict(rpn_fpn=TFStyleFPN(cfg, input_shapes), roi_fpn=TFStyleFPN(cfg, input_shapes))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Shapes of each of the two dicts (equal)."""
        return self.roi_fpn.output_shape()

    def forward(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            features: bottom-up maps, name -> ``Tensor[N, C_l, H_l, W_l]``.

        Returns:
            ``(rpn_features, roi_features)``, each ``p<level>`` -> ``Tensor[N, C, H_l, W_l]``.
        """
        return self.rpn_fpn(features), self.roi_fpn(features)


@BACKBONE_REGISTRY.register()
def build_seph_two_way_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet -> extra levels -> before hook -> :class:`TwoWayFPN` -> RPN hook on the RPN dict.

    Needs ``MODEL.META_ARCHITECTURE: SephGeneralizedRCNN`` (the backbone returns two dicts).
    """
    return build_hooked_neck_backbone(cfg, input_shape, TwoWayFPN)
