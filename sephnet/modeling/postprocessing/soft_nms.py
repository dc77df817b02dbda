"""Soft-NMS (Bodla et al., 2017): decay the scores of overlapping boxes instead of removing them.

Greedy, like NMS: take the highest-scoring remaining box, keep it with its current score,
then multiply the score of every remaining box by a weight of its IoU ``u`` with the kept box:

* ``"linear"``: ``1 - u`` when ``u > iou_threshold``, else 1;
* ``"gaussian"``: ``exp(-u**2 / sigma)`` for every box.

Boxes whose score falls below ``score_threshold`` are dropped.
"""
from typing import Tuple

import torch

from sephnet.backend import Boxes, pairwise_iou

__all__ = ["SOFT_NMS_METHODS", "soft_nms", "batched_soft_nms"]

SOFT_NMS_METHODS = ("linear", "gaussian")


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    method: str,
    iou_threshold: float,
    sigma: float,
    score_threshold: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS of one set of boxes (one class).

    Args:
        boxes: float ``[N, 4]`` XYXY.
        scores: float ``[N]``.
        method: ``"linear"`` or ``"gaussian"``.
        iou_threshold: linear only: IoU above which a score decays.
        sigma: gaussian only: the decay width, > 0.
        score_threshold: boxes whose decayed score is below this are dropped.

    Returns:
        ``keep`` (int64 ``[D]``, indices into ``boxes`` in the order kept, which is by
        non-increasing decayed score) and their decayed scores (``[D]``).
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"soft-NMS method={method!r}; expected one of {SOFT_NMS_METHODS}.")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"Gaussian soft-NMS needs sigma > 0; got {sigma!r}.")
    n = len(boxes)
    if n == 0:
        return boxes.new_zeros(0, dtype=torch.int64), scores.new_zeros(0)
    iou = pairwise_iou(Boxes(boxes), Boxes(boxes))
    current = scores.clone()
    alive = current >= score_threshold
    keep, kept_scores = [], []
    for _ in range(n):
        if not bool(alive.any()):
            break
        best = int(torch.where(alive, current, current.new_tensor(float("-inf"))).argmax())
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        overlap = iou[best]
        if method == "linear":
            weight = torch.where(overlap > iou_threshold, 1.0 - overlap, torch.ones_like(overlap))
        else:
            weight = torch.exp(-(overlap * overlap) / sigma)
        current = torch.where(alive, current * weight, current)
        alive &= current >= score_threshold
    keep_t = torch.tensor(keep, dtype=torch.int64, device=boxes.device)
    return keep_t, torch.stack(kept_scores) if kept_scores else scores.new_zeros(0)


def batched_soft_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, **kwargs
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nms` within each class (boxes of different classes never interact).

    Args:
        boxes ``[N, 4]``, scores ``[N]``, classes int ``[N]``; ``kwargs`` as :func:`soft_nms`.

    Returns:
        ``keep`` (int64 ``[D]``) and decayed scores ``[D]``, sorted by decreasing score.
    """
    if len(boxes) == 0:
        return soft_nms(boxes, scores, **kwargs)
    # shift each class to its own region so cross-class IoU is 0 (weight 1 in both methods)
    span = (boxes.max() - boxes.min()).clamp(min=0) + 1
    shifted = boxes - boxes.min() + (classes.to(boxes) * span)[:, None]
    keep, kept_scores = soft_nms(shifted, scores, **kwargs)
    order = kept_scores.argsort(descending=True, stable=True)
    return keep[order], kept_scores[order]
