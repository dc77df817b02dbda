"""The plain IoU loss ``1 - IoU`` for box regression (the first of the IoU-loss family
whose GIoU, DIoU and CIoU members detectron2 names in ``BBOX_REG_LOSS_TYPE``)."""
import torch

__all__ = ["iou_loss"]


def iou_loss(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-box ``1 - IoU(pred, gt)``; the linear form (as GIoU/DIoU/CIoU), not ``-ln IoU``.

    Non-overlapping pairs get the loss 1 and no gradient, which is why GIoU/DIoU add a
    distance term.

    Args:
        pred_boxes, gt_boxes: float ``[R, 4]`` (x1, y1, x2, y2), paired row by row.
        eps: added to the union against division by zero.

    Returns:
        float ``[R]``.
    """
    x1 = torch.max(pred_boxes[:, 0], gt_boxes[:, 0])
    y1 = torch.max(pred_boxes[:, 1], gt_boxes[:, 1])
    x2 = torch.min(pred_boxes[:, 2], gt_boxes[:, 2])
    y2 = torch.min(pred_boxes[:, 3], gt_boxes[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_pred = (pred_boxes[:, 2] - pred_boxes[:, 0]) * (pred_boxes[:, 3] - pred_boxes[:, 1])
    area_gt = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    return 1.0 - inter / (area_pred + area_gt - inter + eps)
