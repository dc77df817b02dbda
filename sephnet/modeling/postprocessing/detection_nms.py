"""The box head's test-time suppression, configurable beyond detectron2's per-class NMS.

:class:`DetectionNMS` (``MODEL.SEPH.BOX_NMS.*``) chooses how a set of scored, classed boxes
becomes detections::

    candidates --METHOD: "nms" (detectron2's) | "soft_linear" | "soft_gaussian"--> kept
               --FUSION "voting": kept boxes replaced by the score-weighted mean of the
                 candidates of their class with IoU >= FUSION_IOU_THRESH--> detections
    candidates --FUSION "wbf" (instead of METHOD): weighted boxes fusion--> detections

:func:`fast_rcnn_inference_with` is detectron2's ``fast_rcnn_inference`` with that step in
place of its NMS; sephnet's predictors call it whenever the keys are not the defaults (with
the defaults they call the backend's own function). The ensemble tool uses
:meth:`DetectionNMS.select` to fuse the detections of several models and views.
"""
from dataclasses import dataclass
from typing import List, Tuple

import torch

from sephnet.backend import Boxes, Instances

from .box_voting import box_voting
from .soft_nms import batched_soft_nms
from .topk_nms import batched_nms_topk
from .weighted_boxes_fusion import weighted_boxes_fusion

__all__ = ["NMS_METHODS", "FUSIONS", "DetectionNMS", "fast_rcnn_inference_with"]

NMS_METHODS = ("nms", "soft_linear", "soft_gaussian")
FUSIONS = ("none", "voting", "wbf")


@dataclass(frozen=True)
class DetectionNMS:
    """How candidates are suppressed or fused (see the module docstring).

    Attributes:
        method: ``"nms"``, ``"soft_linear"`` or ``"soft_gaussian"``.
        soft_sigma: Gaussian soft-NMS decay width (> 0).
        soft_score_thresh: soft-NMS drops boxes whose decayed score falls below this.
        fusion: ``"none"``, ``"voting"`` or ``"wbf"`` (``"wbf"`` needs ``method="nms"``:
            it replaces the suppression).
        fusion_iou_thresh: voting: IoU >= this votes; wbf: IoU > this joins a cluster.
    """

    method: str = "nms"
    soft_sigma: float = 0.5
    soft_score_thresh: float = 0.001
    fusion: str = "none"
    fusion_iou_thresh: float = 0.5

    def __post_init__(self):
        if self.method not in NMS_METHODS:
            raise ValueError(f"NMS method={self.method!r}; expected one of {NMS_METHODS}.")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; expected one of {FUSIONS}.")
        if self.fusion == "wbf" and self.method != "nms":
            raise ValueError(
                f"fusion='wbf' replaces the suppression; method={self.method!r} must be 'nms'."
            )
        if not self.soft_sigma > 0:
            raise ValueError(f"soft_sigma={self.soft_sigma!r}; expected a number > 0.")
        if not 0.0 <= self.fusion_iou_thresh <= 1.0:
            raise ValueError(f"fusion_iou_thresh={self.fusion_iou_thresh!r}; expected [0, 1].")

    @classmethod
    def from_config(cls, cfg) -> "DetectionNMS":
        """From ``MODEL.SEPH.BOX_NMS.*``."""
        node = cfg.MODEL.SEPH.BOX_NMS
        return cls(
            method=node.METHOD,
            soft_sigma=node.SOFT_SIGMA,
            soft_score_thresh=node.SOFT_SCORE_THRESH,
            fusion=node.FUSION,
            fusion_iou_thresh=node.FUSION_IOU_THRESH,
        )

    @property
    def is_detectron2_nms(self) -> bool:
        """True when this is plain per-class NMS (detectron2's own step)."""
        return self.method == "nms" and self.fusion == "none"

    def select(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        nms_thresh: float,
        num_sources: int = 1,
        topk: int = -1,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Suppress or fuse candidates.

        Args:
            boxes ``[N, 4]``, scores ``[N]``, classes int ``[N]``: the candidates.
            nms_thresh: IoU threshold of NMS and of linear soft-NMS.
            num_sources: predictors the candidates were pooled from (WBF's down-weighting).
            topk: keep only the ``topk`` best detections (negative: all). Plain NMS then
                suppresses only the candidates that can reach them (:func:`batched_nms_topk`:
                the same result as suppressing all and truncating).

        Returns:
            boxes ``[D, 4]``, scores ``[D]``, classes ``[D]`` sorted by decreasing score, and
            the int64 ``[D]`` index of each detection's source candidate (for WBF: its
            cluster's highest-scoring box).
        """
        if self.fusion == "wbf":
            fused = weighted_boxes_fusion(
                boxes, scores, classes, iou_threshold=self.fusion_iou_thresh,
                num_sources=num_sources,
            )
            return fused if topk < 0 else tuple(t[:topk] for t in fused)
        if self.method == "nms":
            # float32 for both: detectron2's batched_nms casts the boxes only
            keep = batched_nms_topk(boxes.float(), scores.float(), classes, nms_thresh, topk)
            kept_scores = scores[keep]
        else:
            keep, kept_scores = batched_soft_nms(
                boxes, scores, classes,
                method=self.method[len("soft_"):],
                iou_threshold=nms_thresh,
                sigma=self.soft_sigma,
                score_threshold=self.soft_score_thresh,
            )
            if topk >= 0:
                keep, kept_scores = keep[:topk], kept_scores[:topk]
        kept_boxes, kept_classes = boxes[keep], classes[keep]
        if self.fusion == "voting":
            kept_boxes = box_voting(
                kept_boxes, kept_classes, boxes, scores, classes, self.fusion_iou_thresh
            )
        return kept_boxes, kept_scores, kept_classes, keep


def fast_rcnn_inference_with(
    detection_nms: DetectionNMS,
    boxes: List[torch.Tensor],
    scores: List[torch.Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> Tuple[List[Instances], List[torch.Tensor]]:
    """detectron2's ``fast_rcnn_inference`` with ``detection_nms`` in place of its NMS.

    Per image: drop rows with non-finite boxes or scores, clip boxes to the image, keep
    (region, class) pairs with score > ``score_thresh``, :meth:`DetectionNMS.select`, keep
    the ``topk_per_image`` best (negative: all).

    Args:
        boxes: per image ``[Ri, K*4]`` or ``[Ri, 4]``; scores: per image ``[Ri, K+1]``
            (background last); image_shapes: per image ``(height, width)``.

    Returns:
        Per image Instances (``pred_boxes``, ``scores``, ``pred_classes``) and the int64
        indices of the source regions (among the finite rows, as detectron2's).
    """
    results = [
        _single_image(detection_nms, b, s, hw, score_thresh, nms_thresh, topk_per_image)
        for b, s, hw in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def _single_image(detection_nms, boxes, scores, image_shape, score_thresh, nms_thresh, topk):
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[finite], scores[finite]
    num_reg = boxes.shape[1] // 4
    clipped = Boxes(boxes.reshape(-1, 4))
    clipped.clip(image_shape)
    boxes = clipped.tensor.view(-1, num_reg, 4)
    fg = scores[:, :-1]
    region, cls = (fg > score_thresh).nonzero(as_tuple=True)
    cand_boxes = boxes[region, cls if num_reg > 1 else torch.zeros_like(cls)]
    out_boxes, out_scores, out_classes, src = detection_nms.select(
        cand_boxes, fg[region, cls], cls, nms_thresh, topk=topk
    )
    result = Instances(image_shape)
    result.pred_boxes = Boxes(out_boxes)
    result.scores = out_scores
    result.pred_classes = out_classes
    return result, region[src]
