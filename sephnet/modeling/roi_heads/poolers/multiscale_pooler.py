"""The multi-scale ROI pooler: a box crop and a context crop per ROI
(docs/components.md#roi-pooling).

The log's ROIMultiScale (sephv19, sephv25*, iou5)::

    features{L levels}, boxes (x1, y1, x2, y2)  [R_i per image]
      box crop     = ROIPooler(box)                      --> box     [R, C, S, S]
      context box  = box scaled by s_c about its centre  (no clipping to the image)
      context crop = ROIPooler(context box), pooled on the level assigned to the BOX
                                                         --> context [R, C, M, M]
    returns ContextPair(box, context)

Two historical versions (``MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_SCALE / _RESOLUTION``):
up to 2020-10-29 (sephv19, sephv25, sephv25_1): s_c = 1.5, M = 7; from 2020-10-30
(sephv25_2, iou5): s_c = 13/7, M = 13 (the context sampled as densely as the 7x7 box crop).

Same level for both crops: detectron2's level rule is
``floor(canonical_level + log2(sqrt(area) / canonical_box_size))``; the context box's
``sqrt(area)`` is ``s_c`` times the box's, so the context crop uses a ``ROIPooler`` whose
``canonical_box_size`` is ``s_c`` times the box pooler's and gets the box's level without
re-implementing the pooler. (At a box size exactly on a level boundary, float rounding of
the scaled area could in principle move the context crop one level; it never matters for
real proposals, whose sizes are not exact powers of two times 224.)
"""
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from sephnet.backend import Boxes, ROIPooler
from sephnet.modeling.roi_heads.decoupled_features import ContextPair

__all__ = ["MultiScaleROIPooler", "scale_boxes", "CONTEXT_VERSIONS"]

#: (context scale, context resolution) of the two versions of the original.
CONTEXT_VERSIONS = {"2020-10-29": (1.5, 7), "2020-10-30": (13.0 / 7.0, 13)}


def scale_boxes(boxes: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale XYXY boxes about their centres, without clipping.

    Args:
        boxes: ``Tensor[R, 4]`` (x1, y1, x2, y2).
        factor: s_c > 0; width and height are multiplied by it.

    Returns:
        ``Tensor[R, 4]``: (cx - s_c w / 2, cy - s_c h / 2, cx + s_c w / 2, cy + s_c h / 2).
    """
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=1)


class MultiScaleROIPooler(nn.Module):
    """Drop-in for ``ROIPooler`` that returns ``ContextPair(box, context)``; see the module."""

    def __init__(
        self,
        *,
        output_size: Union[int, Tuple[int, int]],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        context_scale: float,
        context_resolution: int,
        canonical_box_size: float = 224,
        canonical_level: int = 4,
    ):
        """
        Args:
            output_size, scales, sampling_ratio, pooler_type, canonical_box_size,
                canonical_level: as detectron2's ``ROIPooler`` (the box crop).
            context_scale: s_c > 1, the context box's size relative to the box.
            context_resolution: M >= 1, the context crop's output size (M x M).

        Raises:
            ValueError: ``context_scale <= 1`` or ``context_resolution < 1``.
        """
        super().__init__()
        if not context_scale > 1.0:
            raise ValueError(
                f"MultiScaleROIPooler: context_scale={context_scale!r}; expected a number > 1 "
                "(MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_SCALE)."
            )
        if isinstance(context_resolution, bool) or not isinstance(context_resolution, int) \
                or context_resolution < 1:
            raise ValueError(
                f"MultiScaleROIPooler: context_resolution={context_resolution!r}; expected an "
                "int >= 1 (MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION)."
            )
        self.context_scale = float(context_scale)
        common = dict(
            scales=tuple(scales),
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
            canonical_level=canonical_level,
        )
        self.box_pooler = ROIPooler(
            output_size=output_size, canonical_box_size=canonical_box_size, **common
        )
        self.context_pooler = ROIPooler(
            output_size=context_resolution,
            canonical_box_size=canonical_box_size * self.context_scale,
            **common,
        )

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> ContextPair:
        """
        Args:
            x: the feature maps, ``Tensor[N, C, H_l, W_l]`` per level (as ``ROIPooler``).
            box_lists: N ``Boxes`` (R_i boxes each, absolute XYXY).

        Returns:
            ``ContextPair(box[R, C, S, S], context[R, C, M, M])``, R = sum R_i, in the
            concatenated order of ``box_lists``.
        """
        context_lists = [Boxes(scale_boxes(b.tensor, self.context_scale)) for b in box_lists]
        return ContextPair(
            box=self.box_pooler(x, box_lists), context=self.context_pooler(x, context_lists)
        )
