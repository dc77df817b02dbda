"""DETR's one-to-one matching of predictions to targets (the Hungarian algorithm).

For one image with Q predictions and T targets the cost of pairing prediction i with
target j is::

    C[i, j] = cost_class * (-p_i(c_j)) + cost_bbox * |b_i - b_j|_1 + cost_giou * (-GIoU(b_i, b_j))

with p_i the softmax over the K + 1 classes of prediction i, c_j the class of target j,
and boxes as normalised (cx, cy, w, h) (the L1 term) or their XYXY form (the GIoU term).
The assignment minimising the total cost is scipy's ``linear_sum_assignment``; each target
gets one prediction, the other Q - T predictions are unmatched ("no object"). This is a
set matcher, not one of the anchor matchers of this package (no ``MatchResult``).
"""
from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment

from sephnet.layers.box_ops import box_cxcywh_to_xyxy, pairwise_giou

__all__ = ["HungarianMatcher"]


class HungarianMatcher:
    """Minimum-cost bipartite matching of predictions to targets, per image."""

    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        """
        Args:
            cost_class, cost_bbox, cost_giou: weights of the three cost terms (>= 0, not
                all 0); the paper's are 1, 5 and 2.
        """
        costs = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou}
        if min(costs.values()) < 0 or max(costs.values()) == 0:
            raise ValueError(f"HungarianMatcher: {costs}; expected weights >= 0, not all 0.")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    def cost_matrix(
        self, logits: torch.Tensor, boxes: torch.Tensor, gt_classes: torch.Tensor, gt_boxes: torch.Tensor
    ) -> torch.Tensor:
        """The cost C above for one image.

        Args:
            logits: ``[Q, K + 1]`` class logits; boxes: ``[Q, 4]`` normalised cxcywh.
            gt_classes: int64 ``[T]`` in [0, K); gt_boxes: ``[T, 4]`` normalised cxcywh.

        Returns:
            ``[Q, T]``.
        """
        prob = logits.softmax(-1)
        cost = -self.cost_class * prob[:, gt_classes]
        cost = cost + self.cost_bbox * torch.cdist(boxes, gt_boxes, p=1)
        giou = pairwise_giou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes))
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def __call__(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            logits: ``[N, Q, K + 1]``; boxes: ``[N, Q, 4]`` normalised cxcywh.
            targets: per image ``{"labels": int64 [T_n], "boxes": [T_n, 4] normalised cxcywh}``.

        Returns:
            Per image ``(pred_idx, gt_idx)``, int64 ``[min(Q, T_n)]`` each, ``pred_idx``
            increasing: prediction ``pred_idx[k]`` is matched to target ``gt_idx[k]``.
        """
        matches = []
        for logit, box, target in zip(logits, boxes, targets):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logit.float(), box.float(), target["labels"], target["boxes"].float())
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return matches
