"""Per-class NMS that stops once the best ``k`` detections are known.

``batched_nms(boxes, scores, classes, t)[:k]`` suppresses every candidate and then keeps the
``k`` best survivors. Greedy NMS decides each box from the higher-scoring boxes of its class
alone, so the survivors among the ``m`` highest-scoring candidates are the same whether NMS sees
those ``m`` or all of them; when at least ``k`` of them survive and the ``m``-th score is
strictly above every score left out, they hold the answer. :func:`batched_nms_topk` tries
``m = max(4k, 1000)`` and doubles it until that holds (at worst it runs NMS on everything).

The result equals ``batched_nms(...)[:k]`` up to the order among exactly equal scores, which
``batched_nms`` itself leaves to its (unstable) sort. With a low score threshold (detectron2's
box head keeps 1000 proposals x 80 classes above a threshold of 0.05 or less) the suppression
shrinks from tens of thousands of candidates to a few thousand.
"""
import torch

from sephnet.backend import batched_nms

__all__ = ["batched_nms_topk"]

MIN_CANDIDATES = 1000
"""The first try keeps at least this many candidates (and at least 4 k)."""


def batched_nms_topk(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                     iou_threshold: float, k: int) -> torch.Tensor:
    """``batched_nms(boxes, scores, classes, iou_threshold)[:k]`` (``k < 0``: all) without
    suppressing candidates that cannot reach the first ``k``.

    Args:
        boxes: ``Tensor[N, 4]`` (x0, y0, x1, y1); scores: ``Tensor[N]``; classes: int
            ``Tensor[N]``: NMS runs within each class.

    Returns:
        int64 ``Tensor[D]`` (D <= k) of kept indices into the inputs, by decreasing score.
    """
    count = len(scores)
    size = max(4 * k, MIN_CANDIDATES)
    while 0 <= k and size < count:
        top_scores, top = scores.topk(size + 1)
        if top_scores[-2] > top_scores[-1]:  # no tie across the cut
            top = top[:-1]
            keep = batched_nms(boxes[top], top_scores[:-1], classes[top], iou_threshold)
            if len(keep) >= k:
                return top[keep[:k]]
        size *= 2
    keep = batched_nms(boxes, scores, classes, iou_threshold)
    return keep if k < 0 else keep[:k]
