"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection"), detectron2 v0.6.

One "anchor" per location: a square of side = the level's stride, centred on the location.

    training: a location is positive for gt g iff (all must hold)
                |centre - g's centre|_inf < center_sampling_radius * stride  (centre sampling)
                the centre lies strictly inside g
                lower < max(l, t, r, b) < upper, with (lower, upper) = (4, 8) * stride,
                    lower = 0 on the finest level and upper = inf on the coarsest
              among several such gts the smallest one (by area) wins; no ignored locations.
              loss_fcos_cls = sigmoid focal loss over all locations / normaliser
              loss_fcos_loc = GIoU loss of the decoded (l, t, r, b) boxes over positives / normaliser
              loss_fcos_ctr = BCE(centerness logit, sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)))
                              over positives / normaliser
              normaliser    = EMA (momentum 0.9, start 300) of the positive count
    inference: score = sqrt(sigmoid(cls) * sigmoid(centerness)), then as RetinaNet
               (threshold 0.2, top-1000 per level, NMS 0.6 by default)

Like detectron2 v0.6, FCOS has no yacs ``from_config``: construct it with keyword arguments
(sephnet's registered, config-driven FCOS builds on this class).
"""
from typing import List, Optional, Tuple

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch import Tensor, nn
from torch.nn import functional as F

from sephnet.d2.layers import ShapeSpec, batched_nms
from sephnet.d2.modeling.anchor_generator import DefaultAnchorGenerator
from sephnet.d2.modeling.backbone import Backbone
from sephnet.d2.modeling.box_regression import Box2BoxTransformLinear, _dense_box_regression_loss
from sephnet.d2.structures import Boxes, ImageList, Instances, pairwise_point_box_distance
from sephnet.d2.utils.events import get_event_storage

from .dense_detector import DenseDetector
from .retinanet import RetinaNetHead

__all__ = ["FCOS", "FCOSHead"]


class FCOS(DenseDetector):
    """Anchor-free one-stage detector (see the module docstring).

    Args:
        backbone, head, head_in_features, pixel_mean, pixel_std: see :class:`DenseDetector`;
            ``head`` returns ``(logits, box_deltas, centerness)``, e.g. :class:`FCOSHead`.
        box2box_transform: default ``Box2BoxTransformLinear(normalize_by_size=True)``.
        num_classes: K.
        center_sampling_radius: in strides (see the module docstring).
        focal_loss_alpha, focal_loss_gamma, test_*, max_detections_per_image: as RetinaNet.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Optional[List[str]] = None,
        box2box_transform=None,
        num_classes,
        center_sampling_radius: float = 1.5,
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        test_score_thresh=0.2,
        test_topk_candidates=1000,
        test_nms_thresh=0.6,
        max_detections_per_image=100,
        pixel_mean,
        pixel_std,
    ):
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_classes = num_classes
        shapes = backbone.output_shape()
        strides = [shapes[name].stride for name in self.head_in_features]
        # The anchor "point" is a box of side = stride, so the linear transform can normalise
        # distances by the stride.
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides
        )
        self.box2box_transform = box2box_transform or Box2BoxTransformLinear(normalize_by_size=True)
        self.center_sampling_radius = float(center_sampling_radius)
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_centerness)

    @torch.no_grad()
    def match_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]) -> List[Tensor]:
        """Per image, int64 (R,): the gt index of every location, or -1 (see the module docstring).

        Args:
            anchors: L ``Boxes``, finest level first.
        """
        per_level = [len(x) for x in anchors]
        anchors = Boxes.cat(anchors)
        centers = anchors.get_centers()  # (R, 2)
        sizes = anchors.tensor[:, 2] - anchors.tensor[:, 0]  # (R,) = stride
        lower = sizes * 4
        lower[: per_level[0]] = 0
        upper = sizes * 8
        upper[-per_level[-1]:] = float("inf")

        matched = []
        for gt in gt_instances:
            near_center = (centers[:, None, :] - gt.gt_boxes.get_centers()[None]).abs_().amax(dim=2)
            ok = near_center < self.center_sampling_radius * sizes[:, None]  # (R, G)
            ltrb = pairwise_point_box_distance(centers, gt.gt_boxes)  # (R, G, 4)
            ok &= ltrb.amin(dim=2) > 0
            reach = ltrb.amax(dim=2)
            ok &= (reach > lower[:, None]) & (reach < upper[:, None])
            # Prefer the smallest gt: score 1e8 - area for candidates, 0 otherwise.
            score = ok.to(torch.float32) * (1e8 - gt.gt_boxes.area()[None, :])
            best, index = score.max(dim=1)
            index[best < 1e-5] = -1
            matched.append(index)
        return matched

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """As :meth:`RetinaNet.label_anchors` with FCOS's rule; no location is ignored.

        Returns:
            N int64 (R,) labels (K = background) and N ``Boxes`` (R) of matched gt boxes
            (gt 0's box where unmatched).
        """
        labels, boxes = [], []
        for index, gt in zip(self.match_anchors(anchors, gt_instances), gt_instances):
            label = gt.gt_classes[index.clip(min=0)]
            label[index < 0] = self.num_classes
            labels.append(label)
            boxes.append(gt.gt_boxes[index.clip(min=0)])
        return labels, boxes

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness):
        """{"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"} (see the module docstring)."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        positive = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos = positive.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 300)

        targets = F.one_hot(gt_labels, num_classes=self.num_classes + 1)[:, :, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            torch.cat(pred_logits, dim=1),
            targets.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_loc = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            [b.tensor for b in gt_boxes],
            positive,
            box_reg_loss_type="giou",
        )
        ctr_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        ctr_logits = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        loss_ctr = F.binary_cross_entropy_with_logits(
            ctr_logits[positive], ctr_targets[positive], reduction="sum"
        )
        return {
            "loss_fcos_cls": loss_cls / normalizer,
            "loss_fcos_loc": loss_loc / normalizer,
            "loss_fcos_ctr": loss_ctr / normalizer,
        }

    def compute_ctrness_targets(self, anchors: List[Boxes], gt_boxes: List[Boxes]) -> Tensor:
        """(N, R) centerness sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) of every location
        w.r.t. its matched box (meaningful for positives only)."""
        anchors = Boxes.cat(anchors).tensor
        ltrb = torch.stack([self.box2box_transform.get_deltas(anchors, b.tensor) for b in gt_boxes])
        if len(ltrb) == 0:
            return ltrb.new_zeros(0)
        lr, tb = ltrb[:, :, [0, 2]], ltrb[:, :, [1, 3]]
        ratio = (lr.amin(dim=-1) / lr.amax(dim=-1)) * (tb.amin(dim=-1) / tb.amax(dim=-1))
        return ratio.sqrt()

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions: List[List[Tensor]]):
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            # Geometric mean of class and centerness probabilities (FCOS v2, eq. 4).
            scores = [
                torch.sqrt(cls[i].sigmoid_() * ctr[i].sigmoid_())
                for cls, ctr in zip(pred_logits, pred_centerness)
            ]
            deltas = [x[i] for x in pred_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results

    def inference_single_image(
        self, anchors: List[Boxes], box_cls: List[Tensor], box_delta: List[Tensor], image_size: Tuple[int, int]
    ) -> Instances:
        """As :meth:`RetinaNet.inference_single_image`."""
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]


class FCOSHead(RetinaNetHead):
    """:class:`RetinaNetHead` with one anchor per location and a centerness branch.

    ``ctrness`` (conv3x3 -> 1 channel, N(0, 0.01) weights, zero bias) reads the bbox subnet's
    features. No per-level learnable scale: regression targets are already divided by the
    stride. Forward returns ``(logits, bbox_reg, ctrness)``, each L x (N, ., H_l, W_l).
    """

    def __init__(self, *, input_shape: List[ShapeSpec], conv_dims: List[int], **kwargs):
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, num_anchors=1, **kwargs)
        self.ctrness = nn.Conv2d(conv_dims[-1], 1, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.ctrness.weight, std=0.01)
        nn.init.constant_(self.ctrness.bias, 0)

    def forward(self, features: List[Tensor]):
        if len(features) != self._num_features:
            raise ValueError(f"FCOSHead was built for {self._num_features} levels, got {len(features)}")
        logits, bbox_reg, ctrness = [], [], []
        for feature in features:
            logits.append(self.cls_score(self.cls_subnet(feature)))
            box_feature = self.bbox_subnet(feature)
            bbox_reg.append(self.bbox_pred(box_feature))
            ctrness.append(self.ctrness(box_feature))
        return logits, bbox_reg, ctrness
