"""detectron2's single-output box head as a decoupled head (the default of
``MODEL.SEPH.BOX_HEAD.NAME``), so baseline configs run through sephnet's ROI heads with
upstream numbers.
"""
from typing import Dict

import torch
from torch import nn

from sephnet.backend import ShapeSpec, build_box_head, configurable
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures

__all__ = ["UpstreamBoxHead"]


@SEPH_BOX_HEAD_REGISTRY.register()
class UpstreamBoxHead(nn.Module):
    """Wraps a detectron2 box head; classes and boxes read the same features.

    ::

        x[R, C, S, S] -- head (MODEL.ROI_BOX_HEAD.NAME, e.g. FastRCNNConvFCHead) --+--> cls
                                                                                   +--> box
                                                                                   (same tensor)

    ``from_config`` builds the head with the backend's ``build_box_head(cfg, input_shape)``
    from the upstream keys ``MODEL.ROI_BOX_HEAD.*`` (NAME, NUM_CONV, CONV_DIM, NUM_FC,
    FC_DIM, NORM), exactly as detectron2's ``StandardROIHeads`` does. The ``MODEL.SEPH.
    BOX_HEAD.*`` counts and widths are not read. ``NORM`` must be a name detectron2 knows:
    the upstream head cannot build sephnet's EvoNormS0.

    ``state_dict``: the upstream head's keys under ``head.``; in a full model
    ``roi_heads.box_head.head.fc1.weight`` is detectron2's ``roi_heads.box_head.fc1.weight``.
    """

    #: Reads one pooled map only; detectron2's head checks its own widths.
    input_kind = "pooled"
    reads_decoupled = False
    normed_widths = ()

    @configurable
    def __init__(self, *, head: nn.Module):
        """
        Args:
            head: a detectron2 box head: ``forward(x[R, C, S, S]) -> Tensor[R, ...]`` and
                an ``output_shape`` ``ShapeSpec``.

        Raises:
            TypeError: ``head`` is not an ``nn.Module`` with an ``output_shape``.
        """
        super().__init__()
        if not isinstance(head, nn.Module) or not hasattr(head, "output_shape"):
            raise TypeError(
                "UpstreamBoxHead: head must be a detectron2 box head (an nn.Module with "
                f"output_shape); got {type(head).__name__}."
            )
        self.head = head

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"head": build_box_head(cfg, input_shape)}

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """
        Args:
            x: pooled ROI features ``Tensor[R, C, S, S]``.

        Returns:
            ``DecoupledFeatures(y, y, None)`` where ``y = head(x)`` (the same tensor object).
        """
        y = self.head(x)
        return DecoupledFeatures(cls=y, box=y)

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``{"cls": s, "box": s}`` with ``s = head.output_shape``."""
        shape = self.head.output_shape
        return {"cls": shape, "box": shape}
