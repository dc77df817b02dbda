"""Box-to-box transforms (box encodings for regression targets) and the dense box loss.

``Box2BoxTransform`` is the R-CNN centre/size parameterisation:

    dx = wx * (cx_t - cx_s) / w_s        dw = ww * log(w_t / w_s)
    dy = wy * (cy_t - cy_s) / h_s        dh = wh * log(h_t / h_s)

``Box2BoxTransformLinear`` is the FCOS distance-to-edges parameterisation.
All boxes are XYXY tensors of shape (R, 4).
"""

import math
from typing import List, Tuple

import torch
from fvcore.nn import giou_loss, smooth_l1_loss
from torch.nn import functional as F

from sephnet.d2.layers import cat
from sephnet.d2.layers.losses import ciou_loss, diou_loss
from sephnet.d2.structures import Boxes

__all__ = ["Box2BoxTransform", "Box2BoxTransformLinear"]

# dw/dh are clamped so that a 16 px box can grow to at most ~1000 px in one decoding step
# (a small anchor stretched to a typical image side); exp() of larger values overflows fast.
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _centre_size(
    boxes: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, 4) XYXY -> widths, heights, centre x, centre y, each (R,)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return widths, heights, boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights


class Box2BoxTransform:
    """Encode/decode boxes as (dx, dy, dw, dh) deltas relative to source boxes.

    Args:
        weights: (wx, wy, ww, wh) multipliers applied to the deltas when encoding (and divided
            out when decoding), e.g. (10, 10, 5, 5) for Fast R-CNN heads, (1, 1, 1, 1) for RPN.
        scale_clamp: upper bound applied to the decoded dw and dh (after dividing by the
            weights) before ``exp``; defaults to log(1000 / 16).
    """

    def __init__(
        self, weights: Tuple[float, float, float, float], scale_clamp: float = _DEFAULT_SCALE_CLAMP
    ):
        self.weights = weights
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas that turn ``src_boxes`` into ``target_boxes``.

        Args:
            src_boxes: (R, 4) XYXY boxes with positive widths (e.g. proposals or anchors).
            target_boxes: (R, 4) XYXY boxes (e.g. matched ground truth).

        Returns:
            (R, 4) tensor of (dx, dy, dw, dh), in the dtype of the inputs.

        Raises:
            TypeError: if either argument is not a tensor.
            ValueError: if a source box has a non-positive width.
        """
        if not isinstance(src_boxes, torch.Tensor) or not isinstance(target_boxes, torch.Tensor):
            raise TypeError(
                "Box2BoxTransform.get_deltas expects two tensors, got "
                f"{type(src_boxes).__name__} and {type(target_boxes).__name__}"
            )
        src_w, src_h, src_cx, src_cy = _centre_size(src_boxes)
        tgt_w, tgt_h, tgt_cx, tgt_cy = _centre_size(target_boxes)

        wx, wy, ww, wh = self.weights
        deltas = torch.stack(
            (
                wx * (tgt_cx - src_cx) / src_w,
                wy * (tgt_cy - src_cy) / src_h,
                ww * torch.log(tgt_w / src_w),
                wh * torch.log(tgt_h / src_h),
            ),
            dim=1,
        )
        if not bool((src_w > 0).all()):
            raise ValueError(
                "Input boxes to Box2BoxTransform are not valid: a source width is <= 0"
            )
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` relative to ``boxes``.

        Args:
            deltas: (R, k*4) deltas, k >= 1 (k class-specific transforms per box); any float dtype.
            boxes: (R, 4) XYXY reference boxes.

        Returns:
            (R, k*4) float32 XYXY boxes (decoding is always done in float32 for precision).
        """
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths, heights, ctr_x, ctr_y = _centre_size(boxes)

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_cx = dx * widths[:, None] + ctr_x[:, None]
        pred_cy = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        pred = torch.stack(
            (
                pred_cx - 0.5 * pred_w,
                pred_cy - 0.5 * pred_h,
                pred_cx + 0.5 * pred_w,
                pred_cy + 0.5 * pred_h,
            ),
            dim=-1,
        )
        return pred.reshape(deltas.shape)


class Box2BoxTransformLinear:
    """FCOS-style encoding: distances (l, t, r, b) from a source box's centre to the target's edges.

    Args:
        normalize_by_size: divide the distances by the source box width (its "stride").
    """

    def __init__(self, normalize_by_size: bool = True):
        self.normalize_by_size = normalize_by_size

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """(R, 4) square source boxes, (R, 4) targets containing their centres -> (R, 4) deltas."""
        if not isinstance(src_boxes, torch.Tensor) or not isinstance(target_boxes, torch.Tensor):
            raise TypeError(
                "Box2BoxTransformLinear.get_deltas expects two tensors, got "
                f"{type(src_boxes).__name__} and {type(target_boxes).__name__}"
            )
        cx = 0.5 * (src_boxes[:, 0] + src_boxes[:, 2])
        cy = 0.5 * (src_boxes[:, 1] + src_boxes[:, 3])
        deltas = torch.stack(
            (
                cx - target_boxes[:, 0],
                cy - target_boxes[:, 1],
                target_boxes[:, 2] - cx,
                target_boxes[:, 3] - cy,
            ),
            dim=1,
        )
        if self.normalize_by_size:
            deltas = deltas / (src_boxes[:, 2] - src_boxes[:, 0]).unsqueeze(1)
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(R, k*4) deltas (negative distances are clipped to 0), (R, 4) boxes -> (R, k*4) boxes."""
        deltas = F.relu(deltas)
        boxes = boxes.to(deltas.dtype)
        cx = (0.5 * (boxes[:, 0] + boxes[:, 2]))[:, None]
        cy = (0.5 * (boxes[:, 1] + boxes[:, 3]))[:, None]
        if self.normalize_by_size:
            deltas = deltas * (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
        pred = torch.zeros_like(deltas)
        pred[:, 0::4] = cx - deltas[:, 0::4]
        pred[:, 1::4] = cy - deltas[:, 1::4]
        pred[:, 2::4] = cx + deltas[:, 2::4]
        pred[:, 3::4] = cy + deltas[:, 3::4]
        return pred


def _dense_box_regression_loss(
    anchors: List[Boxes],
    box2box_transform: Box2BoxTransform,
    pred_anchor_deltas: List[torch.Tensor],
    gt_boxes: List[torch.Tensor],
    fg_mask: torch.Tensor,
    box_reg_loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> torch.Tensor:
    """Summed box regression loss over the foreground anchors of a multi-level dense head.

    Args:
        anchors: L Boxes, level l holding (Hl*Wl*A, 4) anchors; together R anchors.
        box2box_transform: the encoding used by the head.
        pred_anchor_deltas: L tensors of shape (N, Hl*Wl*A, 4).
        gt_boxes: N tensors of shape (R, 4), the matched gt box of every anchor.
        fg_mask: (N, R) bool, the anchors that contribute to the loss.
        box_reg_loss_type: "smooth_l1" (on deltas), or "giou" / "diou" / "ciou" (on decoded boxes).
        smooth_l1_beta: beta of the smooth L1 loss (0 means L1).

    Returns:
        Scalar tensor (sum over foreground anchors, not normalised).

    Raises:
        ValueError: for an unknown ``box_reg_loss_type``.
    """
    anchors_t = type(anchors[0]).cat(anchors).tensor  # (R, 4)
    if box_reg_loss_type == "smooth_l1":
        gt_deltas = torch.stack([box2box_transform.get_deltas(anchors_t, g) for g in gt_boxes])
        return smooth_l1_loss(
            cat(pred_anchor_deltas, dim=1)[fg_mask],
            gt_deltas[fg_mask],
            beta=smooth_l1_beta,
            reduction="sum",
        )
    decoded_losses = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}
    if box_reg_loss_type not in decoded_losses:
        raise ValueError(
            f"Invalid dense box regression loss type '{box_reg_loss_type}'; "
            "expected one of 'smooth_l1', 'giou', 'diou', 'ciou'"
        )
    pred_boxes = torch.stack(
        [box2box_transform.apply_deltas(d, anchors_t) for d in cat(pred_anchor_deltas, dim=1)]
    )
    loss_fn = decoded_losses[box_reg_loss_type]
    return loss_fn(pred_boxes[fg_mask], torch.stack(gt_boxes)[fg_mask], reduction="sum")
