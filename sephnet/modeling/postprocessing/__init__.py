"""Test-time post-processing of detections: soft-NMS, box voting, weighted boxes fusion,
and :class:`DetectionNMS`, the box head's configurable suppression (``MODEL.SEPH.BOX_NMS``)."""
from .box_voting import box_voting
from .detection_nms import FUSIONS, NMS_METHODS, DetectionNMS, fast_rcnn_inference_with
from .soft_nms import SOFT_NMS_METHODS, batched_soft_nms, soft_nms
from .weighted_boxes_fusion import weighted_boxes_fusion

__all__ = [
    "FUSIONS",
    "NMS_METHODS",
    "SOFT_NMS_METHODS",
    "DetectionNMS",
    "batched_soft_nms",
    "box_voting",
    "fast_rcnn_inference_with",
    "soft_nms",
    "weighted_boxes_fusion",
]
