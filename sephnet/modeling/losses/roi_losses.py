"""The ROI classification and box-regression losses selected by ``MODEL.SEPH.ROI_LOSS.*``.

:func:`build_roi_losses` returns ``(cls_loss, box_loss)``; each is ``None`` when the config
keeps detectron2's loss (softmax cross-entropy; ``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE``),
so a default config computes exactly what it computed before these keys existed.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from sephnet.modeling.losses.balanced_l1 import balanced_l1_loss
from sephnet.modeling.losses.focal import softmax_focal_loss
from sephnet.modeling.losses.ghm import GradientDensityWeights, asl1_loss
from sephnet.modeling.losses.iou import iou_loss

__all__ = [
    "CLS_LOSS_TYPES",
    "BOX_LOSS_TYPES",
    "ROIClassificationLoss",
    "ROIBoxRegressionLoss",
    "build_roi_losses",
]

#: Values of ``MODEL.SEPH.ROI_LOSS.CLS_TYPE``.
CLS_LOSS_TYPES = ("cross_entropy", "focal", "ghm_c")
#: Values of ``MODEL.SEPH.ROI_LOSS.BOX_TYPE``; "upstream" leaves the box loss to
#: ``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE`` (smooth_l1, giou, diou, ciou).
BOX_LOSS_TYPES = ("upstream", "iou", "balanced_l1", "ghm_r")


class ROIClassificationLoss(nn.Module):
    """Per-ROI classification loss of the (K+1)-way softmax classifier.

    * ``"cross_entropy"``: ``-sum_c q_c log p_c`` with the smoothed target
      ``q = (1 - eps) onehot(label) + eps / (K+1)`` (``eps = label_smoothing``; 0 gives the
      plain cross-entropy);
    * ``"focal"``: :func:`~sephnet.modeling.losses.focal.softmax_focal_loss` with ``gamma``;
    * ``"ghm_c"``: the cross-entropy times the GHM weight of ``g = 1 - p_t`` (see
      :mod:`~sephnet.modeling.losses.ghm`), the weights taken over the R ROIs of the batch.
    """

    def __init__(
        self,
        kind: str = "cross_entropy",
        *,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        ghm_bins: int = 10,
        ghm_momentum: float = 0.0,
    ):
        """
        Args:
            kind: one of :data:`CLS_LOSS_TYPES`.
            label_smoothing: eps in [0, 1); only with ``"cross_entropy"``.
            focal_gamma: >= 0, for ``"focal"``.
            ghm_bins, ghm_momentum: for ``"ghm_c"`` (see ``GradientDensityWeights``).

        Raises:
            ValueError: an unknown ``kind`` or a parameter out of range.
        """
        super().__init__()
        if kind not in CLS_LOSS_TYPES:
            raise ValueError(f"ROI classification loss {kind!r}; expected one of {CLS_LOSS_TYPES}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r}; expected a number in [0, 1).")
        if label_smoothing > 0 and kind != "cross_entropy":
            raise ValueError(f"label_smoothing applies to 'cross_entropy' only, not {kind!r}.")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma={focal_gamma!r}; expected a number >= 0.")
        self.kind = kind
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = float(focal_gamma)
        self.ghm = (
            GradientDensityWeights(bins=ghm_bins, momentum=ghm_momentum)
            if kind == "ghm_c"
            else None
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: float ``[R, K+1]``; labels: int64 ``[R]`` in ``[0, K]``.

        Returns:
            float ``[R]``, unreduced.
        """
        if self.kind == "focal":
            return softmax_focal_loss(logits, labels, self.focal_gamma)
        ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        if self.kind == "ghm_c":
            ce = ce * self.ghm(1.0 - torch.exp(-ce.detach()))  # ce = -log p_t here
        return ce

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, label_smoothing={self.label_smoothing}, "
            f"focal_gamma={self.focal_gamma}"
        )


class ROIBoxRegressionLoss(nn.Module):
    """Per-ROI box loss of the foreground ROIs, for the sephnet-only loss types.

    * ``"iou"``: :func:`~sephnet.modeling.losses.iou.iou_loss` of the decoded box;
    * ``"balanced_l1"``: :func:`~sephnet.modeling.losses.balanced_l1.balanced_l1_loss` of
      the delta error ``pred - target`` (targets from the box coder), summed over the 4
      coordinates (as detectron2's smooth L1);
    * ``"ghm_r"``: ASL1 of the delta error times the GHM weight of each coordinate's
      gradient norm (weights over all 4F coordinates of the batch), summed per ROI.
    """

    def __init__(
        self,
        kind: str,
        *,
        balanced_l1_alpha: float = 0.5,
        balanced_l1_gamma: float = 1.5,
        balanced_l1_beta: float = 1.0,
        ghm_r_mu: float = 0.02,
        ghm_bins: int = 10,
        ghm_momentum: float = 0.0,
    ):
        """
        Args:
            kind: ``"iou"``, ``"balanced_l1"`` or ``"ghm_r"``.
            balanced_l1_alpha, balanced_l1_gamma, balanced_l1_beta: > 0, for "balanced_l1".
            ghm_r_mu: > 0, ASL1's mu, for "ghm_r".
            ghm_bins, ghm_momentum: for "ghm_r" (see ``GradientDensityWeights``).

        Raises:
            ValueError: an unknown ``kind`` or a parameter out of range.
        """
        super().__init__()
        if kind not in BOX_LOSS_TYPES or kind == "upstream":
            raise ValueError(
                f"ROI box loss {kind!r}; expected one of {BOX_LOSS_TYPES[1:]} (the upstream "
                "types are computed by the predictor itself)."
            )
        for name, value in (
            ("balanced_l1_alpha", balanced_l1_alpha),
            ("balanced_l1_gamma", balanced_l1_gamma),
            ("balanced_l1_beta", balanced_l1_beta),
            ("ghm_r_mu", ghm_r_mu),
        ):
            if not value > 0:
                raise ValueError(f"{name}={value!r}; expected a number > 0.")
        self.kind = kind
        self.balanced_l1 = dict(
            alpha=balanced_l1_alpha, gamma=balanced_l1_gamma, beta=balanced_l1_beta
        )
        self.ghm_r_mu = float(ghm_r_mu)
        self.ghm = (
            GradientDensityWeights(bins=ghm_bins, momentum=ghm_momentum)
            if kind == "ghm_r"
            else None
        )

    def forward(
        self,
        pred_deltas: torch.Tensor,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        box2box_transform,
    ) -> torch.Tensor:
        """
        Args:
            pred_deltas: float ``[F, 4]``, each foreground ROI's deltas for its class.
            proposal_boxes, gt_boxes: float ``[F, 4]``.
            box2box_transform: the predictor's box coder (``get_deltas``, ``apply_deltas``).

        Returns:
            float ``[F]``, unreduced.
        """
        if self.kind == "iou":
            return iou_loss(box2box_transform.apply_deltas(pred_deltas, proposal_boxes), gt_boxes)
        diff = pred_deltas - box2box_transform.get_deltas(proposal_boxes, gt_boxes)
        if self.kind == "balanced_l1":
            return balanced_l1_loss(diff, **self.balanced_l1).sum(dim=1)
        mu = self.ghm_r_mu
        weights = self.ghm(diff.detach().abs() / torch.sqrt(diff.detach() ** 2 + mu * mu))
        return (asl1_loss(diff, mu) * weights).sum(dim=1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def build_roi_losses(cfg) -> Tuple[Optional[ROIClassificationLoss], Optional[ROIBoxRegressionLoss]]:
    """``(cls_loss, box_loss)`` from ``MODEL.SEPH.ROI_LOSS.*``; None where detectron2's loss stays.

    The classification loss is None for plain cross-entropy without label smoothing; the
    box loss is None for ``BOX_TYPE: "upstream"``.
    """
    node = cfg.MODEL.SEPH.ROI_LOSS
    cls_loss = None
    if node.CLS_TYPE != "cross_entropy" or node.LABEL_SMOOTHING > 0:
        cls_loss = ROIClassificationLoss(
            node.CLS_TYPE,
            label_smoothing=node.LABEL_SMOOTHING,
            focal_gamma=node.FOCAL_GAMMA,
            ghm_bins=node.GHM_BINS,
            ghm_momentum=node.GHM_MOMENTUM,
        )
    box_loss = None
    if node.BOX_TYPE != "upstream":
        box_loss = ROIBoxRegressionLoss(
            node.BOX_TYPE,
            balanced_l1_alpha=node.BALANCED_L1_ALPHA,
            balanced_l1_gamma=node.BALANCED_L1_GAMMA,
            balanced_l1_beta=node.BALANCED_L1_BETA,
            ghm_r_mu=node.GHM_R_MU,
            ghm_bins=node.GHM_BINS,
            ghm_momentum=node.GHM_MOMENTUM,
        )
    return cls_loss, box_loss
