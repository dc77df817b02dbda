"""The sephv2 head with an IoU-driven channel gate on the box tower (docs/components.md#box-heads).

::

                      +-- cls_tower: FCs ------------------------------------------> cls
    x[R, C, S, S] ----+-- box_tower: convs -> b [R, conv_dim, S, S] -- * g --------> box
                      +-- iou_tower (IoU branch on) -> iou ------------------------> iou
                                         |
                                         +-> flatten -> FC(conv_dim) -> sigmoid = g [R, conv_dim]

Composition: an inner :class:`~sephnet.modeling.roi_heads.box_heads.conv_fc_heads.FCClsConvBoxHead`
(``head.*`` in the ``state_dict``; IoU tower from ``MODEL.SEPH.BOX_HEAD.IOU_NUM_CONV/FC``) plus
the gate FC (``gate.*``, with bias). Without the IoU branch the head equals FCClsConvBoxHead.
Out of the log (config sephv5 on mnist; docs/components.md#conventions), offered because it is
cheap.
"""
from typing import Dict

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import FCClsConvBoxHead
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures

__all__ = ["IouGatedConvBoxHead"]


@SEPH_BOX_HEAD_REGISTRY.register()
class IouGatedConvBoxHead(nn.Module):
    """FCClsConvBoxHead whose box output is gated per channel by its IoU tower's features."""

    input_kind = "pooled"
    reads_decoupled = True  # as its inner FCClsConvBoxHead
    normed_widths = ()

    @configurable
    def __init__(self, *, head: FCClsConvBoxHead):
        """
        Args:
            head: the inner sephv2 head; with an IoU tower the gate is built.
        """
        super().__init__()
        self.head = head
        self.gate = None
        shapes = head.output_shapes
        if "iou" in shapes:
            iou = shapes["iou"]
            in_features = iou.channels * (iou.height or 1) * (iou.width or 1)
            self.gate = nn.Linear(in_features, shapes["box"].channels)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"head": FCClsConvBoxHead(cfg, input_shape)}

    def forward(self, x) -> DecoupledFeatures:
        """
        Args:
            x: pooled ``Tensor[R, C, S, S]`` or a hook's ``DecoupledFeatures``.

        Returns:
            The inner head's ``DecoupledFeatures`` with ``box`` multiplied by the gate.
        """
        out = self.head(x)
        if self.gate is None:
            return out
        g = torch.sigmoid(self.gate(out.iou.flatten(1)))
        return out._replace(box=out.box * g[:, :, None, None])

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """The inner head's ``output_shapes``."""
        return self.head.output_shapes
