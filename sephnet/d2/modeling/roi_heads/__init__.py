"""ROI heads of the portable core (detectron2.modeling.roi_heads).

Importing this package registers the built-in heads: ``StandardROIHeads``,
``Res5ROIHeads`` and ``CascadeROIHeads`` in ``ROI_HEADS_REGISTRY``,
``FastRCNNConvFCHead`` in ``ROI_BOX_HEAD_REGISTRY`` and ``MaskRCNNConvUpsampleHead`` in
``ROI_MASK_HEAD_REGISTRY``. Keypoint and rotated-box heads are not part of the core.
The exported names are detectron2's; functions such as ``fast_rcnn_inference`` or
``mask_rcnn_loss`` are imported from their submodules, as with detectron2.
"""
from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead, build_box_head
from .mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
)
from .roi_heads import (
    ROI_HEADS_REGISTRY,
    ROIHeads,
    Res5ROIHeads,
    StandardROIHeads,
    build_roi_heads,
    select_foreground_proposals,
)
from .cascade_rcnn import CascadeROIHeads
from .fast_rcnn import FastRCNNOutputLayers

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "FastRCNNConvFCHead",
    "build_box_head",
    "ROI_MASK_HEAD_REGISTRY",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "build_mask_head",
    "ROI_HEADS_REGISTRY",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "build_roi_heads",
    "select_foreground_proposals",
    "CascadeROIHeads",
    "FastRCNNOutputLayers",
]
