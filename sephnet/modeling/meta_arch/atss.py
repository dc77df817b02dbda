"""``SephATSS``: RetinaNet with one anchor per location, ATSS anchor assignment and a
centerness branch (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection").

::

    backbone (FPN, P3-P7) --> FCOSHead: RetinaNet towers, A = 1 anchor per location
                              (e.g. a square of 8 x stride), + centerness on the box tower
    assignment: sephnet's ATSSMatcher (k = MODEL.SEPH.ATSS.TOPK nearest anchors per level,
                IoU threshold mean + std of their IoUs, centre inside the gt); no ignores
    losses:     loss_cls          focal over all anchors
                loss_box_reg      MODEL.RETINANET.BBOX_REG_LOSS_TYPE (the paper: "giou") on
                                  positives, anchor-relative deltas (BBOX_REG_WEIGHTS)
                loss_centerness   BCE(centerness logit, FCOS centerness of the anchor centre
                                  in its gt) on positives
                each divided by the EMA of the positive count (RetinaNet's normaliser; the
                paper weights the box loss by the centerness targets instead)
    test:       sqrt(cls * centerness) > SCORE_THRESH_TEST, top-k per level, per-class NMS

Every other key is detectron2's ``MODEL.RETINANET`` / ``MODEL.ANCHOR_GENERATOR`` with its
meaning; the matcher is the one the log uses in the RPN (``sephnet/modeling/matchers``).
"""
from typing import List

import torch
from torch.nn import functional as F

from sephnet.backend import (
    META_ARCH_REGISTRY,
    Box2BoxTransform,
    Box2BoxTransformLinear,
    Boxes,
    Instances,
    RetinaNet,
    build_anchor_generator,
    build_backbone,
)
from sephnet.modeling.matchers.atss import ATSSMatcher
from sephnet.modeling.meta_arch.dense_head import build_centerness_head

__all__ = ["SephATSS", "centerness_targets"]


def centerness_targets(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """FCOS centerness sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) of each anchor's centre in
    its matched box: (R, 4), (R, 4) XYXY -> (R,), 0 where the centre is on or outside an edge."""
    ltrb = Box2BoxTransformLinear(normalize_by_size=False).get_deltas(anchors, gt_boxes).clamp(min=0)
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    ratio = (lr.amin(dim=1) / lr.amax(dim=1).clamp(min=1e-6)) * (tb.amin(dim=1) / tb.amax(dim=1).clamp(min=1e-6))
    return ratio.sqrt()


@META_ARCH_REGISTRY.register()
class SephATSS(RetinaNet):
    """ATSS detector (see the module docstring). Constructor arguments are RetinaNet's, with
    ``head`` returning ``(logits, deltas, centerness)`` (an ``FCOSHead``) and ``anchor_matcher``
    an :class:`ATSSMatcher`."""

    @classmethod
    def from_config(cls, cfg) -> dict:
        retina = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        available = backbone.output_shape()
        missing = [f for f in retina.IN_FEATURES if f not in available]
        if missing:
            raise ValueError(
                f"MODEL.RETINANET.IN_FEATURES {list(retina.IN_FEATURES)}: {missing} not produced by "
                f"the backbone (it outputs {sorted(available)})"
            )
        shapes = [available[f] for f in retina.IN_FEATURES]
        anchor_generator = build_anchor_generator(cfg, shapes)
        if set(anchor_generator.num_cell_anchors) != {1}:
            raise ValueError(
                f"SephATSS uses one anchor per location; MODEL.ANCHOR_GENERATOR gives "
                f"{anchor_generator.num_cell_anchors} (set one size per level and ASPECT_RATIOS: [[1.0]])"
            )
        return {
            "backbone": backbone,
            "head": build_centerness_head(cfg, shapes),
            "head_in_features": retina.IN_FEATURES,
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(weights=retina.BBOX_REG_WEIGHTS),
            "anchor_matcher": ATSSMatcher(topk=cfg.MODEL.SEPH.ATSS.TOPK, min_iou=0.0),
            "num_classes": retina.NUM_CLASSES,
            "focal_loss_alpha": retina.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": retina.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": retina.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": retina.BBOX_REG_LOSS_TYPE,
            "test_score_thresh": retina.SCORE_THRESH_TEST,
            "test_topk_candidates": retina.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": retina.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        losses = self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)
        positive = torch.stack(gt_labels)
        positive = (positive >= 0) & (positive != self.num_classes)
        all_anchors = Boxes.cat(anchors).tensor
        targets = torch.stack([centerness_targets(all_anchors, b) for b in gt_boxes])
        logits = torch.cat(pred_centerness, dim=1).squeeze(2)
        loss = F.binary_cross_entropy_with_logits(logits[positive], targets[positive], reduction="sum")
        losses["loss_centerness"] = loss / self.loss_normalizer
        return losses

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """Like ``RetinaNet.label_anchors`` with ATSS assignment: labels are the gt class for
        positives and K (background) otherwise (never -1); boxes (R, 4) per image."""
        per_level = [len(a) for a in anchors]
        all_anchors = Boxes.cat(anchors)
        gt_labels, matched_boxes = [], []
        for gt in gt_instances:
            matched_idxs, match_labels = self.anchor_matcher(gt.gt_boxes, all_anchors, per_level)
            if len(gt) > 0:
                labels = gt.gt_classes[matched_idxs]
                labels[match_labels == 0] = self.num_classes
                boxes = gt.gt_boxes.tensor[matched_idxs]
            else:
                labels = torch.full_like(matched_idxs, self.num_classes)
                boxes = torch.zeros_like(all_anchors.tensor)
            gt_labels.append(labels)
            matched_boxes.append(boxes)
        return gt_labels, matched_boxes

    def forward_inference(self, images, features, predictions):
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            scores = [
                torch.sqrt(cls[i].sigmoid_() * ctr[i].sigmoid_())
                for cls, ctr in zip(pred_logits, pred_centerness)
            ]
            deltas = [x[i] for x in pred_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results
