"""The IoU-prediction branch of the box predictor ("pred iou", iou1...iou7, "pred centerness").

docs/components.md#iou-branch: one class-agnostic output per ROI, trained towards a quality target
that depends on ``VERSION``. How it enters the test score is a config choice
(:data:`IOU_TEST_SCORES`), applied by the predictor; the default, "by_version", is the
original's rule: version 3 (centerness) always multiplies the class probabilities, every other
version is ignored at test time (:func:`test_score_of_version`).

"FL-BCE" below is the sigmoid focal binary cross-entropy with soft labels (alpha 0.25,
gamma 2): with ``p = sigmoid(x)`` and a real target ``y``,
``(1 - p_t)^2 (0.25 y + 0.75 (1 - y)) BCE(y, p)``, ``p_t = y p + (1 - y)(1 - p)``;
fvcore's ``sigmoid_focal_loss`` computes exactly this for real-valued targets.

=======  ==================================================  ==========================
version  target (per ROI)                                    loss
=======  ==================================================  ==========================
0        ``gt_ious``: IoU of the *proposal* with its         mean FL-BCE over all ROIs
         matched gt (0 without one)
1        foreground: GIoU of the decoded gt-class box with   mean FL-BCE over fg +
         its gt (may be < 0); background: 0                  NEG_WEIGHT * mean over bg
3        foreground: centerness of the *proposal* centre,    mean FL-BCE over fg
         ``1 - max(2|dy|/h_gt, 2|dx|/w_gt)``
4        as 0, on ROIs with target > 0.4 or (target <= 0.4   mean FL-BCE over those
         and sigmoid(prediction) >= 0.45)
5        as 4, but the output is used raw (no sigmoid)       mean L1 over the same mask
=======  ==================================================  ==========================

"Foreground" is the box-regression foreground set of the predictor (the matcher's
decision). All targets and masks are computed without gradient. An empty selection
contributes 0.
"""

from typing import Optional, Tuple

import torch
from fvcore.nn import giou_loss, sigmoid_focal_loss
from torch import nn

__all__ = [
    "IOU_BRANCH_VERSIONS",
    "IOU_TEST_SCORES",
    "IoUBranch",
    "centerness_targets",
    "test_score_of_version",
    "paired_giou",
]

#: Values of ``MODEL.SEPH.IOU_BRANCH.VERSION`` (the original's ``PRED_IOU_VERSION``).
IOU_BRANCH_VERSIONS = (0, 1, 3, 4, 5)
#: Values of ``MODEL.SEPH.IOU_BRANCH.TEST_SCORE``.
IOU_TEST_SCORES = ("by_version", "off", "multiply", "rank")


def test_score_of_version(version: int) -> str:
    """The original's test-time use of a branch version: "multiply" for 3, else "off"."""
    return "multiply" if version == 3 else "off"

# Versions 4 and 5 keep low-IoU ROIs only when the branch over-predicts them.
_LOW_TARGET = 0.4
_HIGH_PREDICTION = 0.45


def paired_giou(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """GIoU of ``boxes[i]`` with ``gt_boxes[i]`` (not all pairs).

    Args:
        boxes, gt_boxes: float ``[R, 4]`` XYXY.

    Returns:
        float ``[R]`` in ``(-1, 1]``.
    """
    return 1.0 - giou_loss(boxes, gt_boxes, reduction="none")


def centerness_targets(proposal_boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """``1 - max(2|cy_p - cy_g| / h_g, 2|cx_p - cx_g| / w_g)`` per ROI
    (docs/components.md#iou-branch version 3).

    Measured on the *proposal* centre, not the refined box (the original's deliberate
    choice). 1 when the centres coincide, 0 when the proposal centre lies on the gt
    border, negative outside the gt box (kept: the original does not clip). gt sides
    are floored at 1e-6 so degenerate gt boxes do not divide by zero.

    Args:
        proposal_boxes, gt_boxes: float ``[R, 4]`` XYXY.

    Returns:
        float ``[R]``.
    """

    def centre_size(b):
        return (
            (b[:, 0] + b[:, 2]) / 2,
            (b[:, 1] + b[:, 3]) / 2,
            b[:, 2] - b[:, 0],
            b[:, 3] - b[:, 1],
        )

    pcx, pcy, _, _ = centre_size(proposal_boxes)
    gcx, gcy, gw, gh = centre_size(gt_boxes)
    off_y = 2 * (pcy - gcy).abs() / gh.clamp(min=1e-6)
    off_x = 2 * (pcx - gcx).abs() / gw.clamp(min=1e-6)
    return 1.0 - torch.maximum(off_y, off_x)


class IoUBranch(nn.Module):
    """One linear output per ROI predicting its localisation quality.

    Topology::

        iou_feat[R, D] --Linear(D, 1)--> iou_pred[R, 1]   (a logit; raw value for version 5)

    ``iou_feat`` is the head's IoU tower output, or its box features when the head has no
    IoU tower (see ``DecoupledFeatures``). The loss weight lives in the predictor's
    ``loss_weight["loss_iou"]``.
    """

    def __init__(
        self,
        in_features: int,
        *,
        version: int = 0,
        neg_weight: float = 0.5,
        test_score: str = "by_version",
    ):
        """
        Args:
            in_features: D.
            version: one of :data:`IOU_BRANCH_VERSIONS` (see the module docstring).
            neg_weight: version 1 only: weight of the background term (0.5; the 07-30 code
                behind the "pred iou1" row used 0.3).
            test_score: one of :data:`IOU_TEST_SCORES`; read by the predictor at inference.
                "by_version" is resolved here with :func:`test_score_of_version`, so
                :attr:`test_score` is always "off", "multiply" or "rank".
        """
        super().__init__()
        if version not in IOU_BRANCH_VERSIONS:
            raise ValueError(
                f"IoU branch version={version!r}; expected one of {IOU_BRANCH_VERSIONS}."
            )
        if test_score not in IOU_TEST_SCORES:
            raise ValueError(
                f"IoU branch test_score={test_score!r}; expected one of {IOU_TEST_SCORES}."
            )
        self.version = version
        self.neg_weight = neg_weight
        if test_score == "by_version":
            test_score = test_score_of_version(version)
        self.test_score = test_score
        self.iou_pred = nn.Linear(in_features, 1)
        nn.init.normal_(self.iou_pred.weight, std=0.01)
        nn.init.constant_(self.iou_pred.bias, 0.0)

    @property
    def needs_pred_boxes(self) -> bool:
        """Whether :meth:`loss` needs the decoded gt-class boxes (version 1)."""
        return self.version == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[R, D] -> [R, 1]`` (flattened first if it has more dims)."""
        return self.iou_pred(torch.flatten(x, start_dim=1))

    def predicted_iou(self, iou_pred: torch.Tensor) -> torch.Tensor:
        """The branch output as a quality in ``[0, 1]``: sigmoid, or clip for version 5.

        Args:
            iou_pred: float ``[R, 1]`` from :meth:`forward`.

        Returns:
            float ``[R]``.
        """
        out = iou_pred.reshape(-1)
        return out.clamp(0.0, 1.0) if self.version == 5 else out.sigmoid()

    def targets(
        self,
        iou_pred: torch.Tensor,
        *,
        gt_ious: torch.Tensor,
        fg_mask: torch.Tensor,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        pred_boxes: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-ROI targets and loss weights of the configured version (no gradient).

        The loss is ``sum_i weight_i * l(iou_pred_i, target_i)``: the weights hold each
        version's averaging (1/count over the ROIs it uses, 0 elsewhere).

        Args:
            iou_pred: float ``[R, 1]`` from :meth:`forward` (versions 4/5 select on it).
            gt_ious: float ``[R]``, each proposal's IoU with its matched gt (0 without).
            fg_mask: bool ``[R]``, the box-regression foreground.
            proposal_boxes, gt_boxes: float ``[R, 4]`` XYXY (gt rows of background ROIs
                are ignored).
            pred_boxes: float ``[R, 4]``, the decoded gt-class boxes; needed by version 1
                (:attr:`needs_pred_boxes`), rows of background ROIs ignored.

        Returns:
            target, weight: float ``[R]`` each.
        """
        with torch.no_grad():
            out = iou_pred.reshape(-1)
            zeros = torch.zeros_like(out)
            fg = fg_mask.to(out.dtype)
            if self.version == 1:
                if pred_boxes is None:
                    raise ValueError(
                        "IoU branch version 1 needs pred_boxes (decoded gt-class boxes)."
                    )
                # background rows may hold placeholder boxes: replace, do not just mask
                target = torch.where(fg_mask, paired_giou(pred_boxes, gt_boxes), zeros)
                bg = 1.0 - fg
                weight = fg / fg.sum().clamp(min=1.0) + self.neg_weight * bg / bg.sum().clamp(
                    min=1.0
                )
            elif self.version == 3:
                target = torch.where(fg_mask, centerness_targets(proposal_boxes, gt_boxes), zeros)
                weight = fg / fg.sum().clamp(min=1.0)
            else:
                target = gt_ious.to(out.dtype)
                keep = torch.ones_like(out)
                if self.version in (4, 5):
                    quality = out.sigmoid() if self.version == 4 else out
                    keep = ((target > _LOW_TARGET) | (quality >= _HIGH_PREDICTION)).to(out.dtype)
                weight = keep / keep.sum().clamp(min=1.0)
        return target, weight

    def loss(self, iou_pred: torch.Tensor, **fields) -> torch.Tensor:
        """The unweighted branch loss: FL-BCE (L1 for version 5) weighted by :meth:`targets`.

        Args:
            iou_pred: float ``[R, 1]`` from :meth:`forward`.
            fields: the keyword arguments of :meth:`targets`.

        Returns:
            Scalar tensor; 0 (still attached to ``iou_pred``) when no ROI is used.
        """
        target, weight = self.targets(iou_pred, **fields)
        out = iou_pred.reshape(-1)
        if self.version == 5:
            per_roi = (out - target).abs()
        else:
            per_roi = sigmoid_focal_loss(out, target, alpha=0.25, gamma=2.0, reduction="none")
        return (per_roi * weight).sum()

    def extra_repr(self) -> str:
        return (
            f"version={self.version}, neg_weight={self.neg_weight}, test_score={self.test_score!r}"
        )
