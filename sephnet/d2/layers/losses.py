"""Distance-IoU and Complete-IoU box regression losses (Zheng et al., AAAI 2020,
https://arxiv.org/abs/1911.08287). GIoU and smooth-L1 losses come from ``fvcore.nn``.

Both take boxes in (x1, y1, x2, y2) format, Tensor[R, 4] or Tensor[4], and return the
per-box loss Tensor[R] (``reduction="none"``), its mean or its sum. An empty mean is a
connected 0 rather than NaN.
"""
import math
from typing import Tuple

import torch

__all__ = ["diou_loss", "ciou_loss"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _iou_and_center_penalty(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return (IoU, squared centre distance / squared enclosing-box diagonal), both [R]."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    gx1, gy1, gx2, gy2 = boxes2.unbind(dim=-1)
    if not bool((x2 >= x1).all()) or not bool((y2 >= y1).all()):
        raise ValueError("bad box: boxes1 must satisfy x2 >= x1 and y2 >= y1")

    iw = torch.min(x2, gx2) - torch.max(x1, gx1)
    ih = torch.min(y2, gy2) - torch.max(y1, gy1)
    overlaps = (iw > 0) & (ih > 0)
    inter = torch.where(overlaps, iw * ih, torch.zeros_like(iw))
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter + eps
    iou = inter / union

    diag_sq = (torch.max(x2, gx2) - torch.min(x1, gx1)) ** 2 + (torch.max(y2, gy2) - torch.min(y1, gy1)) ** 2 + eps
    center_sq = ((x1 + x2) / 2 - (gx1 + gx2) / 2) ** 2 + ((y1 + y2) / 2 - (gy1 + gy2) / 2) ** 2
    return iou, center_sq / diag_sq


def diou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """DIoU loss ``1 - IoU + d^2 / c^2``: d is the distance between the box centres and c
    the diagonal of the smallest box enclosing both.

    Args:
        boxes1: predicted boxes, Tensor[R, 4] or [4] (x1, y1, x2, y2), with x2 >= x1, y2 >= y1.
        boxes2: target boxes, same shape.
        reduction: "none" | "mean" | "sum".
        eps: added to the union and to c^2 against division by zero.

    Returns:
        Tensor[R] (or a scalar when reduced or for a single box).
    """
    iou, penalty = _iou_and_center_penalty(boxes1, boxes2, eps)
    return _reduce(1 - iou + penalty, reduction)


def ciou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """CIoU loss ``1 - IoU + d^2 / c^2 + alpha * v`` with the aspect-ratio term
    ``v = 4 / pi^2 * (atan(w_t / h_t) - atan(w_p / h_p))^2`` and the trade-off weight
    ``alpha = v / (1 - IoU + v + eps)``, which is treated as a constant (no gradient).

    Args and returns as :func:`diou_loss`.
    """
    iou, penalty = _iou_and_center_penalty(boxes1, boxes2, eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    gx1, gy1, gx2, gy2 = boxes2.unbind(dim=-1)
    v = (4 / (math.pi**2)) * (torch.atan((gx2 - gx1) / (gy2 - gy1)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + penalty + alpha * v, reduction)
