"""sephnet's box predictor: linear or cosine class logits, box deltas, optional IoU branch.

docs/components.md#predictor-and-losses, docs/components.md#conventions. Registered in
``SEPH_BOX_PREDICTOR_REGISTRY`` as ``SephOutputLayers`` (``MODEL.SEPH.PREDICTOR.NAME``).
"""

from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from fvcore.nn import giou_loss
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    Box2BoxTransform,
    Boxes,
    Instances,
    ShapeSpec,
    batched_nms,
    cat,
    configurable,
    _dense_box_regression_loss,
    fast_rcnn_inference,
    _log_classification_stats,
)
from sephnet.layers.cosine_linear import CosineLinear
from sephnet.layers.losses import (
    BOX_REG_LOSS_TYPES,
    iou_box_loss_weights,
    iou_class_loss_weights,
    weighted_cross_entropy,
)
from sephnet.modeling.losses.roi_losses import (
    ROIBoxRegressionLoss,
    ROIClassificationLoss,
    build_roi_losses,
)
from sephnet.modeling.postprocessing import DetectionNMS, fast_rcnn_inference_with
from sephnet.modeling.registry import SEPH_BOX_PREDICTOR_REGISTRY
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures
from sephnet.modeling.roi_heads.predictor.box_coders import build_box_coder
from sephnet.modeling.roi_heads.predictor.iou_branch import IoUBranch

__all__ = [
    "SephPredictions",
    "SephOutputLayers",
    "keep_top1_class",
    "CLS_LAYERS",
    "CLASSES_PER_ROI",
    "BOX_LOSS_WEIGHTINGS",
]

#: Values of MODEL.SEPH.PREDICTOR.CLS_LAYER, .CLASSES_PER_ROI_TEST, .BOX_LOSS_WEIGHTING.
CLS_LAYERS = ("linear", "cosine")
CLASSES_PER_ROI = ("all", "top1")
BOX_LOSS_WEIGHTINGS = ("none", "proposal_iou")


class SephPredictions(NamedTuple):
    """What :meth:`SephOutputLayers.forward` returns.

    Attributes:
        class_logits: float ``[R, K+1]``, background column last.
        proposal_deltas: float ``[R, 4K]`` (class-specific) or ``[R, 4]`` (agnostic).
        iou_pred: float ``[R, 1]`` raw IoU-branch output, or None without the branch.
    """

    class_logits: torch.Tensor
    proposal_deltas: torch.Tensor
    iou_pred: Optional[torch.Tensor] = None


class _RoiTargets(NamedTuple):
    """Batch-concatenated label fields of the sampled proposals (R rows each)."""

    gt_classes: torch.Tensor  # int64 [R], the matcher's classes, K = background
    fg_mask: torch.Tensor  # bool [R], box-regression foreground
    gt_ious: Optional[torch.Tensor]  # float [R], or None when the proposals lack the field
    proposal_boxes: torch.Tensor  # float [R, 4]
    gt_boxes: torch.Tensor  # float [R, 4] (placeholders on background rows)


def _flat_size(shape: ShapeSpec) -> int:
    return shape.channels * (shape.height or 1) * (shape.width or 1)


@SEPH_BOX_PREDICTOR_REGISTRY.register()
class SephOutputLayers(nn.Module):
    """Fast R-CNN outputs on a decoupled head: class logits, box deltas, optional IoU.

    Topology (each input flattened to ``[R, D_*]``)::

        cls_feat[R, D_cls] --cls_score--> class_logits[R, K+1]   Linear, or CosineLinear
        box_feat[R, D_box] --bbox_pred--> proposal_deltas[R, 4K] (or [R, 4] agnostic)
        iou_feat[R, D_iou] --iou_branch.iou_pred--> iou_pred[R, 1]   (optional)

    ``iou_feat`` is the head's IoU tower output, or ``box_feat`` when the head has none.
    A plain tensor input (an upstream single-output box head) feeds all three.

    With the cosine classifier the background logit goes through the same cosine path as
    the K foreground logits (one ``CosineLinear`` with K+1 rows, no bias).

    The parameter names ``cls_score`` and ``bbox_pred`` are detectron2's, so the linear
    variant's state_dict loads into ``FastRCNNOutputLayers`` and back (it also keeps
    detectron2's initialisation: normal std 0.01 / 0.001, zero bias; the original's
    Xavier init is not reproduced).

    Labels used by :meth:`losses` (fields of the sampled proposals):

    * ``gt_classes`` int64 ``[R]``: the ROI matcher's class, K = background. It must hold
      the matched gt's class for every box-regression foreground ROI.
    * ``gt_is_matched`` bool ``[R]`` (optional): the matcher's foreground decision. If
      absent, foreground is ``gt_classes < K``.
    * ``gt_ious`` float ``[R]``: IoU with the matched gt (0 without one; 1 for appended gt
      boxes). Needed by POS_LABELS_THRESHOLD, the class- and box-loss weightings and
      IoU-branch versions 0/4/5 (a ValueError names the field when it is missing).

    The rule (docs/components.md#roi-sampling): box regression (and the mask head) train on the
    matcher's foreground; classification uses ``gt_classes`` where ``gt_ious >
    pos_labels_threshold`` and background K elsewhere (with the threshold 0 = off,
    classification uses ``gt_classes`` unchanged).

    Losses (keys ``loss_cls``, ``loss_box_reg``, ``loss_iou``; each times its entry in
    ``loss_weight``): ``loss_cls`` = ``sum_i w_i CE_i / R`` with ``w`` from
    :func:`~sephnet.layers.losses.iou_class_loss_weights`; ``loss_box_reg`` = detectron2's
    regression loss of the given type summed over foreground ROIs and divided by R (with
    ``box_loss_weighting="proposal_iou"``: the GIoU loss weighted per ROI by
    :func:`~sephnet.layers.losses.iou_box_loss_weights`); ``loss_iou`` = the IoU branch's
    loss (see ``iou_branch.py``). The accuracy statistics use the classification labels.
    ``cls_loss`` / ``box_loss`` (``MODEL.SEPH.ROI_LOSS``: focal, GHM-C, label smoothing;
    IoU, Balanced L1, GHM-R) replace the per-ROI cross-entropy / box loss and keep these
    normalisations.

    Inference: detectron2's ``fast_rcnn_inference`` on the class probabilities, which are
    first multiplied by the predicted IoU when the branch's test score is "multiply"
    (:meth:`predict_probs`) and, with ``classes_per_roi_test="top1"``, reduced to each
    ROI's best foreground class. Test score "rank" ranks and NMS-es candidates by the
    predicted IoU and reports the class probability. detectron2's ``CascadeROIHeads``
    averages :meth:`predict_probs` over stages and calls ``fast_rcnn_inference`` itself,
    so there "multiply" applies but "top1" and "rank" do not.
    """

    supports_iou_branch = True

    @configurable
    def __init__(
        self,
        output_shapes: Union[Dict[str, ShapeSpec], ShapeSpec],
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        cls_layer: str = "linear",
        cosine_scale: float = 20.0,
        cosine_scale_learnable: bool = False,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        cls_loss_weighting: str = "none",
        box_loss_weighting: str = "none",
        pos_labels_threshold: float = 0.0,
        iou_branch: Optional[IoUBranch] = None,
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        classes_per_roi_test: str = "all",
        test_nms: Optional[DetectionNMS] = None,
        cls_loss: Optional[ROIClassificationLoss] = None,
        box_loss: Optional[ROIBoxRegressionLoss] = None,
    ):
        """
        Args:
            output_shapes: the box head's ``output_shapes`` (``"cls"``, ``"box"``, optional
                ``"iou"``), or one ShapeSpec for a single-output head.
            box2box_transform: the box coder (detectron2's, weights BBOX_REG_WEIGHTS).
            num_classes: K, foreground classes.
            cls_layer: ``"linear"`` or ``"cosine"``.
            cosine_scale, cosine_scale_learnable: the cosine classifier's scale.
            cls_agnostic_bbox_reg: one 4-vector of deltas per ROI instead of K.
            smooth_l1_beta: beta of detectron2's smooth L1 (0 = L1).
            box_reg_loss_type: ``"smooth_l1"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
            cls_loss_weighting: ``"none"``, ``"square"`` or ``"linear"`` (per-ROI weights).
            box_loss_weighting: ``"none"``, or ``"proposal_iou"`` (per-ROI GIoU loss times
                1 if the ROI's IoU > 0.5 else its IoU; needs ``box_reg_loss_type="giou"``).
            pos_labels_threshold: IoU in [0, 1); 0 = off (see the class docstring).
            iou_branch: an :class:`IoUBranch` whose input size matches the IoU features,
                or None.
            loss_weight: one float for every loss or a dict with keys ``loss_cls``,
                ``loss_box_reg``, ``loss_iou`` (missing keys weigh 1).
            test_score_thresh, test_nms_thresh, test_topk_per_image: as detectron2's
                ``fast_rcnn_inference``.
            classes_per_roi_test: ``"all"`` (detectron2) or ``"top1"`` (the original).
            test_nms: the test-time suppression (soft-NMS, box voting, WBF); None or the
                default is detectron2's per-class NMS.
            cls_loss: per-ROI classification loss replacing the cross-entropy (focal,
                GHM-C, label smoothing; ``MODEL.SEPH.ROI_LOSS``), or None.
            box_loss: per-ROI box loss replacing ``box_reg_loss_type`` (IoU, Balanced L1,
                GHM-R), or None; not combinable with ``box_loss_weighting``.
        """
        super().__init__()
        if isinstance(output_shapes, ShapeSpec):
            output_shapes = {"cls": output_shapes, "box": output_shapes}
        if not {"cls", "box"} <= set(output_shapes):
            raise ValueError(
                f"output_shapes has keys {sorted(output_shapes)}; expected 'cls' and 'box' "
                "(and optionally 'iou'), or a single ShapeSpec."
            )
        if box_reg_loss_type not in BOX_REG_LOSS_TYPES:
            raise ValueError(
                f"box_reg_loss_type={box_reg_loss_type!r}; expected one of {BOX_REG_LOSS_TYPES}."
            )
        if cls_layer not in CLS_LAYERS:
            raise ValueError(f"cls_layer={cls_layer!r}; expected one of {CLS_LAYERS}.")
        if classes_per_roi_test not in CLASSES_PER_ROI:
            raise ValueError(
                f"classes_per_roi_test={classes_per_roi_test!r}; "
                f"expected one of {CLASSES_PER_ROI}."
            )
        if not 0.0 <= pos_labels_threshold < 1.0:
            raise ValueError(
                f"pos_labels_threshold={pos_labels_threshold!r}; expected a value in [0, 1)."
            )
        iou_branch_input = _flat_size(output_shapes.get("iou", output_shapes["box"]))
        if iou_branch is not None and iou_branch.iou_pred.in_features != iou_branch_input:
            raise ValueError(
                f"iou_branch takes {iou_branch.iou_pred.in_features} features but the head "
                f"gives {iou_branch_input}."
            )
        iou_class_loss_weights(torch.zeros(1), cls_loss_weighting)  # rejects unknown values
        if box_loss_weighting not in BOX_LOSS_WEIGHTINGS:
            raise ValueError(
                f"box_loss_weighting={box_loss_weighting!r}; "
                f"expected one of {BOX_LOSS_WEIGHTINGS}."
            )
        if box_loss_weighting != "none" and box_reg_loss_type != "giou":
            raise ValueError(
                f"box_loss_weighting={box_loss_weighting!r} weights the GIoU loss; "
                f"box_reg_loss_type={box_reg_loss_type!r} must be 'giou'."
            )

        self.num_classes = num_classes
        cls_in, box_in = _flat_size(output_shapes["cls"]), _flat_size(output_shapes["box"])
        if cls_layer == "cosine":
            self.cls_score = CosineLinear(
                cls_in, num_classes + 1, scale=cosine_scale, learnable_scale=cosine_scale_learnable
            )
        else:
            self.cls_score = nn.Linear(cls_in, num_classes + 1)
            nn.init.normal_(self.cls_score.weight, std=0.01)
            nn.init.constant_(self.cls_score.bias, 0.0)
        box_dim = len(box2box_transform.weights)
        self.bbox_pred = nn.Linear(box_in, (1 if cls_agnostic_bbox_reg else num_classes) * box_dim)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.bbox_pred.bias, 0.0)
        self.iou_branch = iou_branch

        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        self.cls_loss_weighting = cls_loss_weighting
        self.box_loss_weighting = box_loss_weighting
        self.pos_labels_threshold = pos_labels_threshold
        if isinstance(loss_weight, (int, float)):
            loss_weight = {k: float(loss_weight) for k in ("loss_cls", "loss_box_reg", "loss_iou")}
        self.loss_weight = dict(loss_weight)
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.classes_per_roi_test = classes_per_roi_test
        if box_loss is not None and box_loss_weighting != "none":
            raise ValueError("box_loss cannot be combined with box_loss_weighting (GIoU only).")
        self.cls_loss = cls_loss
        self.box_loss = box_loss
        self.test_nms = DetectionNMS() if test_nms is None else test_nms

    @classmethod
    def from_config(cls, cfg, output_shapes, box2box_transform=None):
        """``box2box_transform``: the coder to use (Cascade's per-stage weights); None builds
        ``MODEL.SEPH.BOX_CODER.NAME`` with ``build_box_coder(cfg)``."""
        pred, iou = cfg.MODEL.SEPH.PREDICTOR, cfg.MODEL.SEPH.IOU_BRANCH
        if isinstance(output_shapes, ShapeSpec):
            output_shapes = {"cls": output_shapes, "box": output_shapes}
        iou_branch = None
        if iou.ENABLED:
            iou_branch = IoUBranch(
                _flat_size(output_shapes.get("iou", output_shapes["box"])),
                version=iou.VERSION,
                neg_weight=iou.NEG_WEIGHT,
                test_score=iou.TEST_SCORE,
            )
        box_head = cfg.MODEL.ROI_BOX_HEAD
        cls_loss, box_loss = build_roi_losses(cfg)  # MODEL.SEPH.ROI_LOSS.*
        return {
            "output_shapes": output_shapes,
            "box2box_transform": (
                build_box_coder(cfg) if box2box_transform is None else box2box_transform
            ),
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "cls_layer": pred.CLS_LAYER,
            "cosine_scale": pred.COSINE_SCALE,
            "cosine_scale_learnable": pred.COSINE_SCALE_LEARNABLE,
            "cls_agnostic_bbox_reg": box_head.CLS_AGNOSTIC_BBOX_REG,
            "smooth_l1_beta": box_head.SMOOTH_L1_BETA,
            "box_reg_loss_type": box_head.BBOX_REG_LOSS_TYPE,
            "cls_loss_weighting": pred.CLS_LOSS_WEIGHTING,
            "box_loss_weighting": pred.BOX_LOSS_WEIGHTING,
            "pos_labels_threshold": pred.POS_LABELS_THRESHOLD,
            "iou_branch": iou_branch,
            # BBOX_REG_LOSS_WEIGHT is the log's BOX_REG_LOSS_SCALE (GIoU x4/x8/x12 in sephv15*)
            "loss_weight": {
                "loss_cls": pred.CLS_LOSS_WEIGHT,
                "loss_box_reg": box_head.BBOX_REG_LOSS_WEIGHT,
                "loss_iou": iou.LOSS_WEIGHT,
            },
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "classes_per_roi_test": pred.CLASSES_PER_ROI_TEST,
            "test_nms": DetectionNMS.from_config(cfg),
            "cls_loss": cls_loss,
            "box_loss": box_loss,
        }

    def forward(self, features: Union[DecoupledFeatures, torch.Tensor]) -> SephPredictions:
        """
        Args:
            features: a :class:`DecoupledFeatures` (each field ``[R, ...]``), or one tensor
                ``[R, ...]`` used for every branch.

        Returns:
            :class:`SephPredictions`.
        """
        if isinstance(features, torch.Tensor):
            features = DecoupledFeatures(features, features)
        cls_feat = torch.flatten(features.cls, start_dim=1)
        box_feat = torch.flatten(features.box, start_dim=1)
        iou_pred = None
        if self.iou_branch is not None:
            iou_pred = self.iou_branch(features.box if features.iou is None else features.iou)
        return SephPredictions(self.cls_score(cls_feat), self.bbox_pred(box_feat), iou_pred)

    # ---------------------------------------------------------------- training
    @property
    def _needs_gt_ious(self) -> bool:
        return (
            self.pos_labels_threshold > 0
            or self.cls_loss_weighting != "none"
            or self.box_loss_weighting != "none"
            or (self.iou_branch is not None and self.iou_branch.version in (0, 4, 5))
        )

    def _gather_targets(self, proposals: List[Instances], device: torch.device) -> "_RoiTargets":
        """Concatenate the proposals' label fields over the batch (see the class docstring)."""
        if not len(proposals):
            boxes = torch.zeros((0, 4), device=device)
            return _RoiTargets(
                torch.zeros((0,), dtype=torch.int64, device=device),
                torch.zeros((0,), dtype=torch.bool, device=device),
                torch.zeros((0,), device=device),
                boxes,
                boxes,
            )
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        if all(p.has("gt_is_matched") for p in proposals):
            fg_mask = cat([p.gt_is_matched for p in proposals], dim=0).bool()
        else:
            fg_mask = (gt_classes >= 0) & (gt_classes < self.num_classes)
        missing = [i for i, p in enumerate(proposals) if not p.has("gt_ious")]
        if missing and self._needs_gt_ious:
            raise ValueError(
                f"proposals of images {missing} have no 'gt_ious' field, which the predictor's "
                "POS_LABELS_THRESHOLD, CLS_/BOX_LOSS_WEIGHTING or IoU branch needs."
            )
        gt_ious = None if missing else cat([p.gt_ious for p in proposals], dim=0).float()
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        # Without gt_boxes every ROI is background; the proposals are a placeholder.
        gt_boxes = cat(
            [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
            dim=0,
        )
        return _RoiTargets(gt_classes, fg_mask, gt_ious, proposal_boxes, gt_boxes)

    def losses(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            predictions: the output of :meth:`forward` for the R ROIs of ``proposals``.
            proposals: N Instances with ``proposal_boxes``, ``gt_classes`` and, as the class
                docstring says, ``gt_boxes`` / ``gt_is_matched`` / ``gt_ious``.

        Returns:
            ``{"loss_cls", "loss_box_reg"}`` plus ``"loss_iou"`` with the IoU branch; scalars.
            Logs classification accuracy to the current EventStorage (needs one).
        """
        logits, deltas, iou_pred = predictions
        t = self._gather_targets(proposals, logits.device)

        cls_labels = self._classification_labels(t)
        _log_classification_stats(logits, cls_labels)
        cls_weights = box_weights = None
        if self.cls_loss_weighting != "none":
            cls_weights = iou_class_loss_weights(t.gt_ious, self.cls_loss_weighting)
        if self.box_loss_weighting != "none":
            box_weights = iou_box_loss_weights(t.gt_ious)
        if self.cls_loss is None:
            loss_cls = weighted_cross_entropy(logits, cls_labels, cls_weights)
        else:
            per_roi = self.cls_loss(logits, cls_labels)
            if cls_weights is not None:
                per_roi = per_roi * cls_weights
            loss_cls = per_roi.mean() if per_roi.numel() else logits.sum() * 0.0
        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(
                t.proposal_boxes, t.gt_boxes, deltas, t.gt_classes, t.fg_mask, box_weights
            ),
        }
        if self.iou_branch is not None:
            pred_boxes = None
            if self.iou_branch.needs_pred_boxes:
                pred_boxes = self._decode_for_classes(
                    deltas.detach(), t.proposal_boxes, t.gt_classes
                )
            losses["loss_iou"] = self.iou_branch.loss(
                iou_pred,
                gt_ious=t.gt_ious if t.gt_ious is not None else torch.zeros_like(t.fg_mask).float(),
                fg_mask=t.fg_mask,
                proposal_boxes=t.proposal_boxes,
                gt_boxes=t.gt_boxes,
                pred_boxes=pred_boxes,
            )
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def _classification_labels(self, t: "_RoiTargets") -> torch.Tensor:
        """int64 ``[R]``: ``gt_classes``, background where ``gt_ious <= pos_labels_threshold``."""
        if self.pos_labels_threshold <= 0:
            return t.gt_classes
        background = torch.full_like(t.gt_classes, self.num_classes)
        return torch.where(t.gt_ious > self.pos_labels_threshold, t.gt_classes, background)

    def roi_classification_losses(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> torch.Tensor:
        """Each ROI's classification loss, unweighted and unreduced: float ``[R]``.

        The configured loss (``cls_loss``, else the cross-entropy) against the labels
        :meth:`losses` uses. Hard-example mining (``OHEMROISampler``) ranks ROIs by it.
        """
        logits = predictions[0]
        labels = self._classification_labels(self._gather_targets(proposals, logits.device))
        if self.cls_loss is not None:
            return self.cls_loss(logits, labels)
        return F.cross_entropy(logits, labels, reduction="none")

    def _deltas_for_classes(self, deltas: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Pick each ROI's 4 deltas for ``classes`` (``[R]``, clamped into [0, K))."""
        box_dim = len(self.box2box_transform.weights)
        if deltas.shape[1] == box_dim:  # class-agnostic
            return deltas
        rows = torch.arange(deltas.shape[0], device=deltas.device)
        return deltas.view(-1, self.num_classes, box_dim)[
            rows, classes.clamp(0, self.num_classes - 1)
        ]

    def _decode_for_classes(self, deltas, proposal_boxes, classes) -> torch.Tensor:
        return self.box2box_transform.apply_deltas(
            self._deltas_for_classes(deltas, classes), proposal_boxes
        )

    def box_reg_loss(
        self,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        pred_deltas: torch.Tensor,
        gt_classes: torch.Tensor,
        fg_mask: torch.Tensor,
        roi_weights: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Box loss summed over the foreground ROIs, divided by R (all ROIs).

        Not multiplied by ``loss_weight``.

        Args:
            proposal_boxes, gt_boxes: float ``[R, 4]``.
            pred_deltas: float ``[R, 4K]`` or ``[R, 4]``.
            gt_classes: int64 ``[R]``, the matcher's classes.
            fg_mask: bool ``[R]``, the ROIs that regress.
            roi_weights: float ``[R]`` per-ROI weights of the GIoU loss, or None
                (``box_loss_weighting``; only with ``box_reg_loss_type="giou"``).

        Returns:
            Scalar tensor (0 when no ROI is foreground).
        """
        fg_inds = fg_mask.nonzero().squeeze(1)
        box_dim = len(self.box2box_transform.weights)
        if pred_deltas.shape[1] != box_dim and bool(
            (gt_classes[fg_inds] >= self.num_classes).any()
        ):
            raise ValueError(
                "a box-regression foreground ROI (gt_is_matched) has the background class in "
                "gt_classes; class-specific regression needs its matched class there."
            )
        fg_deltas = self._deltas_for_classes(pred_deltas[fg_inds], gt_classes[fg_inds])
        if self.box_loss is not None:  # MODEL.SEPH.ROI_LOSS.BOX_TYPE
            per_roi = self.box_loss(
                fg_deltas, proposal_boxes[fg_inds], gt_boxes[fg_inds], self.box2box_transform
            )
            return per_roi.sum() / max(gt_classes.numel(), 1.0)
        if roi_weights is not None:
            # the original's weighted GIoU ("WeightGIOU"); detectron2 has no per-ROI weights
            fg_boxes = self.box2box_transform.apply_deltas(fg_deltas, proposal_boxes[fg_inds])
            per_roi = giou_loss(fg_boxes, gt_boxes[fg_inds], reduction="none")
            return (per_roi * roi_weights[fg_inds]).sum() / max(gt_classes.numel(), 1.0)
        loss = _dense_box_regression_loss(
            [Boxes(proposal_boxes[fg_inds])],
            self.box2box_transform,
            [fg_deltas.unsqueeze(0)],
            [gt_boxes[fg_inds]],
            torch.ones((1, fg_inds.numel()), dtype=torch.bool, device=pred_deltas.device),
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        # Normalised by all ROIs, not the foreground count (detectron2 and the original agree).
        return loss / max(gt_classes.numel(), 1.0)

    # --------------------------------------------------------------- inference
    def predict_boxes(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Decoded boxes per image: N tensors ``[Ri, 4K]`` (or ``[Ri, 4]`` agnostic)."""
        if not len(proposals):
            return []
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        boxes = self.box2box_transform.apply_deltas(predictions[1], proposal_boxes)
        return boxes.split([len(p) for p in proposals])

    def predict_boxes_for_gt_classes(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Decoded box of each ROI's ``gt_classes`` (clamped into [0, K)): N tensors ``[Ri, 4]``."""
        if not len(proposals):
            return []
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        boxes = self._decode_for_classes(predictions[1], proposal_boxes, gt_classes)
        return boxes.split([len(p) for p in proposals])

    def predict_ious(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Predicted IoU in [0, 1] per image: N tensors ``[Ri]`` (needs the IoU branch)."""
        if self.iou_branch is None:
            raise ValueError("predict_ious needs the IoU branch (MODEL.SEPH.IOU_BRANCH.ENABLED).")
        return self.iou_branch.predicted_iou(predictions[2]).split([len(p) for p in proposals])

    def predict_probs(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Class probabilities per image, N tensors ``[Ri, K+1]``.

        Softmax of the logits, times the predicted IoU (every column) when the IoU
        branch's test score is "multiply".
        """
        probs = predictions[0].softmax(dim=-1)
        if self.iou_branch is not None and self.iou_branch.test_score == "multiply":
            probs = probs * self.iou_branch.predicted_iou(predictions[2])[:, None]
        return probs.split([len(p) for p in proposals])

    def inference(
        self, predictions: SephPredictions, proposals: List[Instances]
    ) -> Tuple[List[Instances], List[torch.Tensor]]:
        """Detections per image, as detectron2's ``FastRCNNOutputLayers.inference``.

        Returns:
            N Instances (``pred_boxes``, ``scores``, ``pred_classes``; at most
            ``test_topk_per_image``) and N int64 tensors of the kept ROI indices.
        """
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        if self.classes_per_roi_test == "top1":
            scores = [keep_top1_class(s) for s in scores]
        image_shapes = [p.image_size for p in proposals]
        if self.iou_branch is not None and self.iou_branch.test_score == "rank":
            ranks = self.predict_ious(predictions, proposals)
            results = [
                self._rank_by_iou_single_image(b, s, q, shape)
                for b, s, q, shape in zip(boxes, scores, ranks, image_shapes)
            ]
            return [r[0] for r in results], [r[1] for r in results]
        return self.select_detections(boxes, scores, image_shapes)

    def select_detections(
        self, boxes: List[torch.Tensor], scores: List[torch.Tensor], image_shapes
    ) -> Tuple[List[Instances], List[torch.Tensor]]:
        """``fast_rcnn_inference`` with this predictor's thresholds and, when ``test_nms``
        is not plain NMS, its soft-NMS / box voting / WBF in place of the NMS."""
        args = (self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image)
        if self.test_nms.is_detectron2_nms:
            return fast_rcnn_inference(boxes, scores, image_shapes, *args)
        return fast_rcnn_inference_with(self.test_nms, boxes, scores, image_shapes, *args)

    def _rank_by_iou_single_image(self, boxes, scores, ranks, image_shape):
        """Threshold on class probability, then NMS and top-k ordered by predicted IoU.

        Args:
            boxes: ``[Ri, 4K]`` or ``[Ri, 4]``; scores: ``[Ri, K+1]``; ranks: ``[Ri]``.
        """
        box_dim = len(self.box2box_transform.weights)
        num_reg = boxes.shape[1] // box_dim
        clipped = Boxes(boxes.reshape(-1, box_dim))
        clipped.clip(image_shape)
        boxes = clipped.tensor.view(-1, num_reg, box_dim)
        fg_scores = scores[:, :-1]
        candidates = (fg_scores > self.test_score_thresh) & torch.isfinite(boxes).all(dim=2).all(
            dim=1
        )[:, None]
        candidates &= torch.isfinite(ranks)[:, None]
        roi, cls = candidates.nonzero(as_tuple=True)
        cand_boxes = boxes[roi, cls if num_reg > 1 else torch.zeros_like(cls)]
        keep = batched_nms(cand_boxes, ranks[roi], cls, self.test_nms_thresh)
        if self.test_topk_per_image >= 0:
            keep = keep[: self.test_topk_per_image]
        result = Instances(image_shape)
        result.pred_boxes = Boxes(cand_boxes[keep])
        result.scores = fg_scores[roi, cls][keep]
        result.pred_classes = cls[keep]
        return result, roi[keep]


def keep_top1_class(probs: torch.Tensor) -> torch.Tensor:
    """Zero every foreground column but each row's largest (``[Ri, K+1]``, bg kept).

    Zeroed entries never pass ``fast_rcnn_inference``'s strict ``score > thresh`` test,
    so each ROI yields at most one detection (the original's docs/components.md#inference rule).
    """
    fg = probs[:, :-1]
    if fg.numel() == 0:
        return probs
    best = fg.argmax(dim=1, keepdim=True)
    top1 = torch.zeros_like(fg).scatter(1, best, fg.gather(1, best))
    return torch.cat([top1, probs[:, -1:]], dim=1)
