"""Weighted boxes fusion (Solovyev et al., 2021): average clusters of boxes instead of
suppressing all but one.

Per class, boxes are visited by decreasing score. A box joins the cluster whose fused box
overlaps it most if that IoU is above ``iou_threshold``, else it starts a new cluster. A
cluster's fused box is the score-weighted mean of its boxes; its score is the mean of its
scores times ``min(size, num_sources) / num_sources``, so a box that only some of the
``num_sources`` predictors (models, views) found is down-weighted.

The ``ensemble-boxes`` package implements the same rule on normalised numpy boxes but
requires numba and pandas; this small torch version works in pixel coordinates.
"""
from typing import Tuple

import torch

from sephnet.backend import Boxes, pairwise_iou

__all__ = ["weighted_boxes_fusion"]


def weighted_boxes_fusion(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    *,
    iou_threshold: float,
    num_sources: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Args:
        boxes: ``[N, 4]`` XYXY; scores: ``[N]``; classes: int ``[N]`` (pooled from all
            sources).
        iou_threshold: a box joins a cluster when its IoU with the fused box is above this.
        num_sources: how many predictors the boxes were pooled from (>= 1).

    Returns:
        fused boxes ``[F, 4]``, fused scores ``[F]``, classes ``[F]`` and, per cluster, the
        index into the inputs of its highest-scoring box (int64 ``[F]``); sorted by
        decreasing fused score.
    """
    if num_sources < 1:
        raise ValueError(f"num_sources={num_sources!r}; expected an integer >= 1.")
    fused_boxes, fused_scores, fused_classes, leaders = [], [], [], []
    for cls in classes.unique().tolist():
        idx = (classes == cls).nonzero()[:, 0]
        idx = idx[scores[idx].argsort(descending=True, stable=True)]
        members = []  # per cluster: list of input indices
        cluster_boxes = boxes.new_zeros(0, 4)
        for i in idx.tolist():
            box = boxes[i : i + 1]
            best = -1
            if len(cluster_boxes):
                iou = pairwise_iou(Boxes(box), Boxes(cluster_boxes))[0]
                j = int(iou.argmax())
                best = j if iou[j] > iou_threshold else -1
            if best < 0:
                members.append([i])
                cluster_boxes = torch.cat([cluster_boxes, box])
            else:
                members[best].append(i)
                m = torch.tensor(members[best], device=boxes.device)
                w = scores[m].to(boxes.dtype)
                cluster_boxes[best] = (w[:, None] * boxes[m]).sum(0) / w.sum()
        for k, m in enumerate(members):
            s = scores[torch.tensor(m, device=scores.device)]
            fused_scores.append(s.mean() * min(len(m), num_sources) / num_sources)
            leaders.append(m[0])
        fused_boxes.append(cluster_boxes)
        fused_classes.extend([cls] * len(members))
    if not leaders:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return boxes.new_zeros(0, 4), scores.new_zeros(0), classes.new_zeros(0), empty
    out_scores = torch.stack(fused_scores)
    order = out_scores.argsort(descending=True, stable=True)
    return (
        torch.cat(fused_boxes)[order],
        out_scores[order],
        torch.tensor(fused_classes, dtype=classes.dtype, device=classes.device)[order],
        torch.tensor(leaders, dtype=torch.int64, device=boxes.device)[order],
    )
