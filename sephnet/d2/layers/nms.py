"""Non-maximum suppression with torchvision's exact semantics.

``nms`` keeps, greedily in order of decreasing score, every box whose IoU with all boxes
kept before it is not greater than ``iou_threshold``. Equal scores keep their input order
(a stable sort), IoU is computed in the boxes' dtype as ``inter / (area_i + area_j - inter)``
exactly as torchvision's kernels do, so both paths agree bit for bit on the kept set.

When torchvision's compiled ops are usable (see :mod:`.torchvision_ops`) they are called;
otherwise a vectorised PyTorch implementation runs: the score-sorted boxes are processed
in blocks; a block is first filtered against the boxes kept so far, then the greedy
decision inside the block is the unique fixed point of
``keep[i] = candidate[i] and not any(keep[j] and iou[j, i] > t for j < i)``, reached by
iterating that equation (each pass fixes at least one more leading entry).
"""
from typing import List

import torch

from .torchvision_ops import torchvision_ops

__all__ = ["nms", "batched_nms"]

_BLOCK = 512  # boxes per block of the pure-PyTorch nms; 512x512 IoU tiles stay in cache


def _pairwise_iou_like_torchvision(a: torch.Tensor, area_a: torch.Tensor, b: torch.Tensor, area_b: torch.Tensor) -> torch.Tensor:
    """IoU matrix Tensor[len(a), len(b)] computed with torchvision's operation order."""
    xx1 = torch.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = torch.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = torch.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _nms_pytorch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Pure-PyTorch greedy NMS; same contract as :func:`nms`."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    sorted_boxes = boxes[order]
    areas = (sorted_boxes[:, 2] - sorted_boxes[:, 0]) * (sorted_boxes[:, 3] - sorted_boxes[:, 1])
    kept_boxes = sorted_boxes[:0]
    kept_areas = areas[:0]
    kept_chunks: List[torch.Tensor] = []
    for start in range(0, len(order), _BLOCK):
        block = sorted_boxes[start : start + _BLOCK]
        block_areas = areas[start : start + _BLOCK]
        candidate = torch.ones(len(block), dtype=torch.bool, device=boxes.device)
        if len(kept_boxes):
            candidate = ~(_pairwise_iou_like_torchvision(kept_boxes, kept_areas, block, block_areas) > iou_threshold).any(0)
        if not bool(candidate.any()):
            continue
        # suppress[j, i]: box j (earlier in the block) would suppress box i if j is kept.
        suppress = _pairwise_iou_like_torchvision(block, block_areas, block, block_areas) > iou_threshold
        suppress = torch.triu(suppress, diagonal=1) & candidate[:, None] & candidate[None, :]
        suppress_f = suppress.to(torch.float32)
        keep = candidate
        while True:
            hit = (keep.to(torch.float32)[None, :] @ suppress_f)[0] > 0
            new_keep = candidate & ~hit
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        idx = keep.nonzero()[:, 0]
        kept_boxes = torch.cat([kept_boxes, block[idx]])
        kept_areas = torch.cat([kept_areas, block_areas[idx]])
        kept_chunks.append(idx + start)
    if not kept_chunks:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    return order[torch.cat(kept_chunks)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (``torchvision.ops.nms``).

    Args:
        boxes: Tensor[N, 4] in (x1, y1, x2, y2) format with ``0 <= x1 < x2``, ``0 <= y1 < y2``.
        scores: Tensor[N].
        iou_threshold: boxes with IoU strictly greater than this with a higher-scoring
            kept box are discarded.

    Returns:
        int64 Tensor[K]: indices of the kept boxes, sorted by decreasing score (equal
        scores in input order).
    """
    ops = torchvision_ops()
    if ops is not None:
        return ops.nms(boxes, scores, iou_threshold)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: scores must have shape [{boxes.shape[0]}], got {tuple(scores.shape)}")
    return _nms_pytorch(boxes, scores, iou_threshold)


def _batched_nms_coordinate_trick(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """One nms call over all groups: each group is shifted by a disjoint coordinate offset."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_per_group(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """One nms call per group (as torchvision does for many boxes); result sorted by score."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        members = torch.where(idxs == group)[0]
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]


def _torchvision_style_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms``, including its switch between the two strategies."""
    ops = torchvision_ops()
    if ops is not None:
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20000) and not torch.jit.is_tracing():
        return _batched_nms_per_group(boxes, scores, idxs, iou_threshold)
    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression applied independently within each group (e.g. class).

    Boxes are converted to float32 first (fp16 lacks the range for the coordinate
    offsets). Below 40000 boxes this is ``torchvision.ops.batched_nms``; above, one
    :func:`nms` per group.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        scores: Tensor[N].
        idxs: int Tensor[N], the group of each box; boxes of different groups never
            suppress each other.
        iou_threshold: discard boxes whose IoU is strictly greater than this.

    Returns:
        int64 Tensor[K]: indices of the kept boxes sorted by decreasing score.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if len(boxes) < 40000:
        return _torchvision_style_batched_nms(boxes.float(), scores, idxs, iou_threshold)
    keep_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
    for group in torch.unique(idxs).cpu().tolist():
        members = (idxs == group).nonzero().view(-1)
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = keep_mask.nonzero().view(-1)
    return keep[scores[keep].argsort(descending=True)]
