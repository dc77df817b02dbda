"""Imbalance and box-regression losses for the ROI box predictor (the survey's tricks).

Each file holds one loss as a plain function of tensors (plus a module where the loss keeps
state); :mod:`~sephnet.modeling.losses.roi_losses` turns ``MODEL.SEPH.ROI_LOSS.*`` into the
two modules the predictor calls. All per-ROI functions return unreduced losses: the
predictor keeps detectron2's normalisation (classification: mean over the R sampled ROIs;
box regression: sum over the foreground ROIs divided by R).

:class:`SetCriterion` is DETR's set loss (matching, classification, L1 and GIoU per decoder layer).
"""
from sephnet.modeling.losses.balanced_l1 import balanced_l1_loss
from sephnet.modeling.losses.focal import softmax_focal_loss
from sephnet.modeling.losses.ghm import GradientDensityWeights, asl1_loss
from sephnet.modeling.losses.iou import iou_loss
from sephnet.modeling.losses.roi_losses import (
    BOX_LOSS_TYPES,
    CLS_LOSS_TYPES,
    ROIBoxRegressionLoss,
    ROIClassificationLoss,
    build_roi_losses,
)
from sephnet.modeling.losses.set_criterion import SetCriterion

__all__ = [
    "balanced_l1_loss",
    "softmax_focal_loss",
    "GradientDensityWeights",
    "asl1_loss",
    "iou_loss",
    "BOX_LOSS_TYPES",
    "CLS_LOSS_TYPES",
    "ROIBoxRegressionLoss",
    "ROIClassificationLoss",
    "build_roi_losses",
    "SetCriterion",
]
