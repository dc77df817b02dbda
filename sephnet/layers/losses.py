"""Losses sephnet needs that detectron2 and fvcore do not have.

* :func:`iou_class_loss_weights`: the experiment log's per-ROI weights of the Fast R-CNN
  classification loss, a function of the ROI's IoU with its matched ground truth
  (docs/components.md#predictor-and-losses: "cls loss weight", "class loss linear scalar").
* :func:`iou_box_loss_weights`: per-ROI weights of the GIoU box loss of the original's
  "WeightGIOU" outputs (docs/components.md#predictor-and-losses; sephv3/4/5 and recipe "3)").
* :func:`weighted_cross_entropy`: softmax cross-entropy with per-ROI weights, averaged
  over all ROIs (not over the weight sum), as the original does.

The soft-label sigmoid focal BCE of the IoU branch (docs/components.md#iou-branch) needs nothing
new:
fvcore's ``sigmoid_focal_loss`` evaluates the same formula for any real-valued target
(``tests/layers/test_losses.py`` checks it against the spec's expression).
"""

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = [
    "BOX_REG_LOSS_TYPES",
    "CLS_LOSS_WEIGHTINGS",
    "iou_box_loss_weights",
    "iou_class_loss_weights",
    "weighted_cross_entropy",
]

#: Box regression losses of detectron2's ``_dense_box_regression_loss``: the values of
#: ``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE`` and ``MODEL.RETINANET.BBOX_REG_LOSS_TYPE``.
BOX_REG_LOSS_TYPES = ("smooth_l1", "giou", "diou", "ciou")

#: Values of ``MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING``.
CLS_LOSS_WEIGHTINGS = ("none", "square", "linear")


def iou_class_loss_weights(ious: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-ROI weights of the classification loss from the ROIs' matched IoU.

    ``"square"`` ("cls loss weight", sephv14 onwards): ``w = min(1, 100 (iou - 0.5)^2)``,
    so ROIs near the 0.5 foreground/background boundary count less (0 at 0.5, 0.25 at
    0.45 and 0.55, 1 at or beyond 0.4 / 0.6).
    ``"linear"`` ("class loss linear scalar", recipe "3)"): ``w = 4 |iou - 0.5|`` (0...2,
    not clipped). ``"none"``: all ones.

    The weights carry no gradient.

    Args:
        ious: float ``[R]``, each ROI's IoU with its matched ground truth (0 without one).
        mode: one of :data:`CLS_LOSS_WEIGHTINGS`.

    Returns:
        float ``[R]`` weights, detached, same dtype/device as ``ious``.
    """
    ious = ious.detach()
    if mode == "none":
        return torch.ones_like(ious)
    if mode == "square":
        return (100.0 * (ious - 0.5) ** 2).clamp(max=1.0)
    if mode == "linear":
        return 4.0 * (ious - 0.5).abs()
    raise ValueError(
        f"class-loss weighting {mode!r} is not known; expected one of {CLS_LOSS_WEIGHTINGS}."
    )


def iou_box_loss_weights(ious: torch.Tensor) -> torch.Tensor:
    """Per-ROI box-loss weights ``1 if iou > 0.5 else iou`` ("WeightGIOU",
    docs/components.md#predictor-and-losses).

    Foreground ROIs below 0.5 IoU (possible with a ROI matcher threshold under 0.5, as in
    sephv3/4/5) regress with a weight equal to their IoU. No gradient.

    Args:
        ious: float ``[R]``, each ROI's IoU with its matched ground truth.

    Returns:
        float ``[R]``, detached.
    """
    ious = ious.detach()
    return torch.where(ious > 0.5, torch.ones_like(ious), ious)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Softmax cross-entropy, weighted per ROI, mean over all ROIs.

    ``sum_i w_i CE_i / R``: the denominator is the number of ROIs, not ``sum_i w_i``
    (docs/components.md#predictor-and-losses), so down-weighting ambiguous ROIs lowers the loss
    instead of renormalising it. With ``weights=None`` this equals ``F.cross_entropy(logits,
    labels)``.

    Args:
        logits: float ``[R, K+1]``.
        labels: int64 ``[R]`` in ``[0, K]``.
        weights: float ``[R]`` or None.

    Returns:
        Scalar tensor; 0 (still attached to ``logits``) when R = 0.
    """
    if labels.numel() == 0:
        return logits.sum() * 0.0
    per_roi = F.cross_entropy(logits, labels, reduction="none")
    if weights is not None:
        per_roi = per_roi * weights
    return per_roi.mean()
