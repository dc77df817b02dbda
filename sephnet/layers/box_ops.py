"""Box helpers of set prediction (DETR): centre-size boxes and the GIoU of every pair.

detectron2 keeps boxes as absolute XYXY; DETR predicts normalised centre-size boxes
(cx, cy, w, h in [0, 1] of the unpadded image), and its matcher needs the generalised IoU
of every (prediction, target) pair, which neither detectron2 nor fvcore provides (fvcore's
``giou_loss`` pairs boxes element-wise).
"""
import torch

__all__ = ["box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "pairwise_giou"]


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x0, y0, x1, y1), same units."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x0, y0, x1, y1) -> ``[..., 4]`` (cx, cy, w, h), same units."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def pairwise_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of every pair: ``IoU - (|C| - |A u B|) / |C|`` with C the smallest
    box enclosing A and B.

    Args:
        boxes1: float ``[M, 4]`` XYXY; boxes2: float ``[T, 4]`` XYXY. Boxes must have
            x1 >= x0 and y1 >= y0 (a degenerate box is refused: its GIoU is undefined).

    Returns:
        float ``[M, T]`` in ``[-1, 1]``.

    Raises:
        ValueError: a box with x1 < x0 or y1 < y0.
    """
    for name, boxes in (("boxes1", boxes1), ("boxes2", boxes2)):
        if bool((boxes[:, 2:] < boxes[:, :2]).any()):
            raise ValueError(f"pairwise_giou: {name} has a box with x1 < x0 or y1 < y0.")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    inter_wh = (
        torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
        - torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    ).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    hull_wh = (
        torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
        - torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    )
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union - (hull - union) / hull
