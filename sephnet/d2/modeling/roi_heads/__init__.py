"""ROI heads of the portable core (detectron2.modeling.roi_heads).

Importing this package registers the built-in heads: ``StandardROIHeads``,
``Res5ROIHeads`` and ``CascadeROIHeads`` in ``ROI_HEADS_REGISTRY``,
``FastRCNNConvFCHead`` in ``ROI_BOX_HEAD_REGISTRY`` and ``MaskRCNNConvUpsampleHead`` in
``ROI_MASK_HEAD_REGISTRY``. Keypoint and rotated-box heads are not part of the core.
"""
from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead, build_box_head
from .mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
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
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "FastRCNNConvFCHead",
    "build_box_head",
    "ROI_MASK_HEAD_REGISTRY",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "build_mask_head",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "ROI_HEADS_REGISTRY",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "build_roi_heads",
    "select_foreground_proposals",
    "CascadeROIHeads",
    "FastRCNNOutputLayers",
    "fast_rcnn_inference",
]
