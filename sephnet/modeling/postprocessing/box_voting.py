"""Box voting (Gidaris & Komodakis, 2015), as used after NMS on the ImageNet leaderboard.

Each kept detection's box is replaced by the score-weighted mean of every candidate box of
its class whose IoU with it is at least ``iou_threshold`` (itself included); its score and
class stay.
"""
import torch

from sephnet.backend import Boxes, pairwise_iou

__all__ = ["box_voting"]


def box_voting(
    kept_boxes: torch.Tensor,
    kept_classes: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_threshold: float,
) -> torch.Tensor:
    """
    Args:
        kept_boxes: ``[D, 4]`` XYXY, the detections NMS kept; kept_classes: int ``[D]``.
        boxes, scores, classes: ``[N, 4]``, ``[N]``, int ``[N]``: the candidates before NMS
            (original scores).
        iou_threshold: a candidate votes for a kept box of its class with IoU >= this.

    Returns:
        ``[D, 4]`` voted boxes. A kept box no candidate votes for (all weights 0) stays.
    """
    if len(kept_boxes) == 0 or len(boxes) == 0:
        return kept_boxes.clone()
    iou = pairwise_iou(Boxes(kept_boxes), Boxes(boxes))
    votes = (iou >= iou_threshold) & (kept_classes[:, None] == classes[None, :])
    weights = votes.to(scores.dtype) * scores[None, :]
    total = weights.sum(dim=1, keepdim=True)
    voted = (weights @ boxes.to(weights.dtype)) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, voted.to(kept_boxes.dtype), kept_boxes)
