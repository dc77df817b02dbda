"""``SephCascadeROIHeads``: detectron2's Cascade R-CNN with sephnet's box heads and predictor.

docs/components.md#cascade, rows "Cascade", "Cascade+roi nr=128/512", "...+min iou threshold=0.4".
"""
from typing import Dict, List

import torch

from sephnet.backend import (
    ROI_HEADS_REGISTRY,
    Box2BoxTransform,
    CascadeROIHeads,
    Instances,
    Matcher,
    ShapeSpec,
    matched_pairwise_iou,
)
from sephnet.modeling.roi_heads.predictor.box_predictor import keep_top1_class
from sephnet.modeling.roi_heads.predictor.build_predictor import build_box_predictor
from sephnet.modeling.roi_heads.roi_heads import SephStandardROIHeads

__all__ = ["SephCascadeROIHeads", "check_cascade_config"]


def check_cascade_config(cfg) -> None:
    """Raise ValueError naming the keys when the Cascade keys are inconsistent.

    Checked: class-agnostic regression (``MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG``), as
    many ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS`` (4 numbers each) as ``IOUS``, no
    IoU-branch "rank" test score, and ``IOUS[0] == MODEL.ROI_HEADS.IOU_THRESHOLDS[0]``
    (stage 0 is labelled by the ROI heads' own matcher).
    """
    cascade = cfg.MODEL.ROI_BOX_CASCADE_HEAD
    ious, weights = list(cascade.IOUS), [list(w) for w in cascade.BBOX_REG_WEIGHTS]
    if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
        raise ValueError(
            "SephCascadeROIHeads needs class-agnostic regression (each stage refines one box "
            "per ROI): set MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG=True (got False)."
        )
    if not ious or len(ious) != len(weights) or any(len(w) != 4 for w in weights):
        raise ValueError(
            f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS={ious} and BBOX_REG_WEIGHTS={weights}: expected "
            "one 4-number weight tuple per stage IoU (at least one stage)."
        )
    iou = cfg.MODEL.SEPH.IOU_BRANCH
    if iou.ENABLED and iou.TEST_SCORE == "rank":
        raise ValueError(
            "MODEL.SEPH.IOU_BRANCH.TEST_SCORE='rank' is not supported by SephCascadeROIHeads "
            "(its inference averages the stages' probabilities); use 'off' or 'multiply'."
        )
    thresholds = list(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS)
    if not thresholds or ious[0] != thresholds[0]:
        raise ValueError(
            f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0]={ious[0]!r} must equal "
            f"MODEL.ROI_HEADS.IOU_THRESHOLDS[0] (got {thresholds}): stage 0 trains on the "
            "ROI heads' own labelling."
        )


@ROI_HEADS_REGISTRY.register()
class SephCascadeROIHeads(CascadeROIHeads, SephStandardROIHeads):
    """Cascade R-CNN whose per-stage box heads and predictors are sephnet's.

    ::

        proposals --(train) append gt, Matcher IOUS[0], ROI sampler (SephStandardROIHeads)
        for stage k = 0 .. S-1:
            boxes_k --box_pooler (shared)--> x[R_k, C, S, S]   (gradient x 1/S)
                --box_heads[k] (SEPH_BOX_HEAD_REGISTRY)--> DecoupledFeatures
                --box_predictors[k] (SEPH_BOX_PREDICTOR_REGISTRY,
                                     Box2BoxTransform(BBOX_REG_WEIGHTS[k]))--> logits, deltas
            boxes_{k+1} = decode(deltas, boxes_k), detached, clipped
            (train) relabel boxes_{k+1} with Matcher(IOUS[k+1]); no re-sampling
        train: {loss_cls_stage{k}, loss_box_reg_stage{k}[, loss_iou_stage{k}]} for every k
        test:  probs = mean_k predictor_k.predict_probs (each on its own input boxes),
               boxes = last stage's decode, then fast_rcnn_inference

    The class combines detectron2's ``CascadeROIHeads`` (stage loop, relabelling, gradient
    scaling, mean-of-stages inference: the intended behaviour of the original, whose test
    code called ``predict_probs`` without its argument, docs/components.md#conventions) with
    :class:`SephStandardROIHeads` (stage-0 sampler, ``gt_ious`` / ``gt_is_matched``) by
    multiple inheritance: only ``_init_box_head`` and ``_match_and_label_boxes`` are
    written here. Stages k > 0 also carry ``gt_ious`` (IoU with the matched gt) and
    ``gt_is_matched``, so the predictor's IoU-weighted losses work at every stage.

    detectron2 conventions kept (docs/components.md#conventions): later stages append no gt boxes
    (the original appended 8 random gt boxes, docs/components.md#conventions). The last stage's
    predictor decides the test-time options: with ``classes_per_roi_test="top1"`` the averaged
    probabilities
    keep each ROI's best foreground class only (the original, docs/components.md#inference); the IoU
    branch's "rank" test score is not supported (rejected at setup). Otherwise inference is the
    backend's own.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        check_cascade_config(cfg)
        # The ROI-hook, multi-scale and size-expert options are rejected for the cascade at
        # setup, so the shared start gives detectron2's ROIPooler here.
        in_features, box_pooler, pooled, head_cls = cls._box_pooler_and_head_class(
            cfg, input_shape
        )
        cascade = cfg.MODEL.ROI_BOX_CASCADE_HEAD
        box_heads, box_predictors, matchers = [], [], []
        for iou, weights in zip(cascade.IOUS, cascade.BBOX_REG_WEIGHTS):
            head = head_cls(cfg, pooled)
            box_heads.append(head)
            box_predictors.append(
                build_box_predictor(
                    cfg, head.output_shapes, box2box_transform=Box2BoxTransform(weights=weights)
                )
            )
            matchers.append(Matcher([iou], [0, 1], allow_low_quality_matches=False))
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_heads": box_heads,
            "box_predictors": box_predictors,
            "proposal_matchers": matchers,
        }

    def _forward_box(self, features, proposals, targets=None):
        """The backend's cascade forward; at test time with top-1 classes or a non-default
        MODEL.SEPH.BOX_NMS, its mean-of-stages scoring followed by the top-1 rule (if set)
        and the last predictor's ``select_detections`` (soft-NMS / voting / WBF)."""
        last = self.box_predictor[-1]
        top1 = getattr(last, "classes_per_roi_test", "all") == "top1"
        plain_nms = getattr(last, "test_nms", None) is None or last.test_nms.is_detectron2_nms
        if self.training or (not top1 and plain_nms):
            return super()._forward_box(features, proposals, targets)
        maps = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        mean_probs, boxes = None, None
        for stage in range(self.num_cascade_stages):
            if stage > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(maps, proposals, stage)
            predictor = self.box_predictor[stage]
            probs = predictor.predict_probs(predictions, proposals)
            share = [p / self.num_cascade_stages for p in probs]
            mean_probs = share if mean_probs is None else [a + b for a, b in zip(mean_probs, share)]
            boxes = predictor.predict_boxes(predictions, proposals)
        if top1:
            mean_probs = [keep_top1_class(p) for p in mean_probs]
        instances, _ = last.select_detections(boxes, mean_probs, image_sizes)
        return instances

    @torch.no_grad()
    def _match_and_label_boxes(
        self, proposals: List[Instances], stage: int, targets: List[Instances]
    ) -> List[Instances]:
        """The backend's relabelling of stage ``stage`` plus ``gt_ious`` and ``gt_is_matched``.

        Args:
            proposals: N Instances with ``proposal_boxes`` (the previous stage's boxes).
            stage: index of the stage whose matcher labels them (> 0).
            targets: N Instances with ``gt_boxes`` and ``gt_classes``.

        Returns:
            The proposals with ``gt_classes``, ``gt_boxes``, ``gt_ious`` (float ``[R_i]``,
            IoU with the matched gt, 0 without gt) and ``gt_is_matched`` (bool ``[R_i]``).
        """
        proposals = super()._match_and_label_boxes(proposals, stage, targets)
        for p, t in zip(proposals, targets):
            has_gt = len(t) > 0
            p.gt_ious = (
                matched_pairwise_iou(p.proposal_boxes, p.gt_boxes)
                if has_gt
                else p.proposal_boxes.tensor.new_zeros(len(p))
            )
            p.gt_is_matched = (p.gt_classes < self.num_classes) & has_gt
        return proposals
