"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection"), detectron2 v0.6 layout.

::

    backbone (e.g. ResNet-FPN P3-P7) --> RetinaNetHead, shared over levels:
        cls_subnet:  NUM_CONVS x (conv3x3 [+ norm] + ReLU) -> cls_score: conv3x3, A*K logits
        bbox_subnet: NUM_CONVS x (conv3x3 [+ norm] + ReLU) -> bbox_pred: conv3x3, A*4 deltas
    training: anchors --Matcher(IOU_THRESHOLDS, IOU_LABELS, low-quality matches)--> labels
              loss_cls     = sigmoid focal loss over non-ignored anchors / normaliser
              loss_box_reg = smooth L1 (or GIoU/DIoU/CIoU) over positives / normaliser
              normaliser   = EMA (momentum 0.9, start 100) of the batch's positive count
    inference: per level keep scores > SCORE_THRESH_TEST, best TOPK_CANDIDATES_TEST,
               decode; then per-class NMS (NMS_THRESH_TEST), keep TEST.DETECTIONS_PER_IMAGE

State-dict names: ``backbone.*``, ``head.cls_subnet.{0,2,4,6}.*`` (with a norm, ``0, 1 (norm),
3, 4, ...``), ``head.bbox_subnet.*``, ``head.cls_score.*``, ``head.bbox_pred.*``.
"""
import logging
import math
from typing import List, Tuple

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch import Tensor, nn
from torch.nn import functional as F

from sephnet.d2.config import configurable
from sephnet.d2.layers import CycleBatchNormList, ShapeSpec, batched_nms, cat, get_norm
from sephnet.d2.modeling.anchor_generator import build_anchor_generator
from sephnet.d2.modeling.backbone import Backbone, build_backbone
from sephnet.d2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from sephnet.d2.modeling.matcher import Matcher
from sephnet.d2.structures import Boxes, ImageList, Instances, pairwise_iou
from sephnet.d2.utils.events import get_event_storage

from .build import META_ARCH_REGISTRY
from .dense_detector import DenseDetector

__all__ = ["RetinaNet", "RetinaNetHead"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class RetinaNet(DenseDetector):
    """One-stage anchor-based detector with focal loss (see the module docstring).

    Args:
        backbone, head, head_in_features, pixel_mean, pixel_std: see :class:`DenseDetector`.
        anchor_generator: anchors per level (e.g. ``DefaultAnchorGenerator``).
        box2box_transform: anchor <-> box encoding of the regression targets.
        anchor_matcher: a detectron2 ``Matcher`` labelling anchors 1 / 0 / -1 (ignore).
        num_classes: K foreground classes; label K means background.
        focal_loss_alpha, focal_loss_gamma: focal loss parameters.
        smooth_l1_beta: beta of the smooth L1 box loss (0 = L1).
        box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
        test_score_thresh, test_topk_candidates, test_nms_thresh, max_detections_per_image:
            inference filters (see the module docstring).
        vis_period, input_format: kept for training visualisation.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features,
        anchor_generator,
        box2box_transform,
        anchor_matcher,
        num_classes,
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        smooth_l1_beta=0.0,
        box_reg_loss_type="smooth_l1",
        test_score_thresh=0.05,
        test_topk_candidates=1000,
        test_nms_thresh=0.5,
        max_detections_per_image=100,
        pixel_mean,
        pixel_std,
        vis_period=0,
        input_format="BGR",
    ):
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.vis_period = vis_period
        self.input_format = input_format

    @classmethod
    def from_config(cls, cfg) -> dict:
        retina = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [name for name in retina.IN_FEATURES if name not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.RETINANET.IN_FEATURES {list(retina.IN_FEATURES)}: {missing} not produced by "
                f"the backbone (it outputs {sorted(shapes)})"
            )
        feature_shapes = [shapes[name] for name in retina.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": RetinaNetHead(cfg, feature_shapes),
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=retina.BBOX_REG_WEIGHTS),
            "anchor_matcher": Matcher(
                retina.IOU_THRESHOLDS, retina.IOU_LABELS, allow_low_quality_matches=True
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_classes": retina.NUM_CLASSES,
            "head_in_features": retina.IN_FEATURES,
            "focal_loss_alpha": retina.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": retina.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": retina.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": retina.BBOX_REG_LOSS_TYPE,
            "test_score_thresh": retina.SCORE_THRESH_TEST,
            "test_topk_candidates": retina.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": retina.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """Focal classification loss and box regression loss.

        Args:
            anchors: L ``Boxes``, R anchors in all.
            pred_logits: L tensors (N, R_l, K); pred_anchor_deltas: L tensors (N, R_l, 4).
            gt_labels: N int64 (R,) labels in {-1 ignore, 0..K-1, K background};
            gt_boxes: N (R, 4) matched boxes (see :meth:`label_anchors`).

        Returns:
            {"loss_cls", "loss_box_reg"}, both divided by the EMA of the positive count.
            Logs ``num_pos_anchors`` (per image) to the event storage.
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid = gt_labels >= 0
        positive = valid & (gt_labels != self.num_classes)
        num_pos = positive.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 100)

        # One-hot over K+1 labels, background column dropped: background is all-zero targets.
        targets = F.one_hot(gt_labels[valid], num_classes=self.num_classes + 1)[:, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            cat(pred_logits, dim=1)[valid],
            targets.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            positive,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """Match every anchor of every image to a gt box by IoU.

        Returns:
            gt_labels: N int64 (R,) tensors, R = all anchors: the matched gt class, K
                (background) for matcher label 0, -1 (ignored) for matcher label -1.
            matched_gt_boxes: N (R, 4) tensors; meaningful only where the label is a class.
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt in gt_instances:
            matched_idxs, anchor_labels = self.anchor_matcher(pairwise_iou(gt.gt_boxes, anchors))
            if len(gt) > 0:
                boxes = gt.gt_boxes.tensor[matched_idxs]
                labels = gt.gt_classes[matched_idxs]
                labels[anchor_labels == 0] = self.num_classes
                labels[anchor_labels == -1] = -1
            else:
                boxes = torch.zeros_like(anchors.tensor)
                labels = torch.full_like(matched_idxs, self.num_classes)
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions: List[List[Tensor]]):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            scores = [x[i].sigmoid_() for x in pred_logits]
            deltas = [x[i] for x in pred_anchor_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results

    def inference_single_image(
        self,
        anchors: List[Boxes],
        box_cls: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """Detections of one image from per-level scores (R_l, K) and deltas (R_l, 4):
        thresholded, top-k per level, decoded, per-class NMS, at most
        ``max_detections_per_image``."""
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]


class RetinaNetHead(nn.Module):
    """Classification and box subnets, shared by all levels (see the module docstring).

    Args:
        input_shape: one ShapeSpec per level (all with the same channels).
        num_classes: K.
        num_anchors: A, anchors per location (the same on every level).
        conv_dims: output channels of each subnet conv.
        norm: norm of the subnet convs; "BN"/"SyncBN" give one ``CycleBatchNormList`` per conv
            (statistics per level, affine shared).
        prior_prob: initial foreground probability: cls_score's bias is -log((1-p)/p).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes,
        num_anchors,
        conv_dims: List[int],
        norm="",
        prior_prob=0.01,
    ):
        super().__init__()
        self._num_features = len(input_shape)
        if norm in ("BN", "SyncBN"):
            logger.info("RetinaNetHead: %s with statistics per level (%d levels)", norm, self._num_features)
            bn_class = nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm

            def norm(channels):
                return CycleBatchNormList(length=self._num_features, bn_class=bn_class, num_features=channels)

        elif "BN" in (norm if isinstance(norm, str) else str(type(get_norm(norm, 1)))):
            logger.warning("RetinaNetHead: a BatchNorm shared across levels (%s) may train poorly", norm)

        def subnet() -> nn.Sequential:
            layers = []
            for c_in, c_out in zip([input_shape[0].channels] + list(conv_dims), conv_dims):
                layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1))
                if norm:
                    layers.append(get_norm(norm, c_out))
                layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        self.cls_subnet = subnet()
        self.bbox_subnet = subnet()
        self.cls_score = nn.Conv2d(conv_dims[-1], num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(conv_dims[-1], num_anchors * 4, kernel_size=3, stride=1, padding=1)
        for module in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0, std=0.01)
                    nn.init.constant_(layer.bias, 0)
        # Start every anchor at foreground probability prior_prob, so the many easy negatives
        # do not swamp the loss in the first iterations.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(
                f"RetinaNetHead needs the same number of anchors on every level, got {num_anchors} "
                "(MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS)"
            )
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.RETINANET.NUM_CONVS,
            "prior_prob": cfg.MODEL.RETINANET.PRIOR_PROB,
            "norm": cfg.MODEL.RETINANET.NORM,
            "num_anchors": num_anchors[0],
        }

    def forward(self, features: List[Tensor]):
        """L feature maps (N, C, H_l, W_l) -> (logits: L x (N, A*K, H_l, W_l),
        bbox_reg: L x (N, A*4, H_l, W_l))."""
        if len(features) != self._num_features:
            raise ValueError(f"RetinaNetHead was built for {self._num_features} levels, got {len(features)}")
        logits = [self.cls_score(self.cls_subnet(f)) for f in features]
        bbox_reg = [self.bbox_pred(self.bbox_subnet(f)) for f in features]
        return logits, bbox_reg
