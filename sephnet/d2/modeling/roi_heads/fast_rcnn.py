"""Fast R-CNN box predictor (classification + box regression) and its test-time post-processing.

Shape letters used below: N images, R regions over the whole batch, Ri regions of image i,
K foreground classes (column K of the class logits is background), B box dimension (4).

Label convention: ``gt_classes`` in ``[0, K)`` are foreground classes, ``K`` is background and
``-1`` marks ignored regions.
"""
import numbers
from typing import Dict, List, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from sephnet.d2.config import configurable
from sephnet.d2.layers import ShapeSpec, batched_nms, cat, cross_entropy, nonzero_tuple
from sephnet.d2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from sephnet.d2.structures import Boxes, Instances
from sephnet.d2.utils.events import get_event_storage

__all__ = ["fast_rcnn_inference", "FastRCNNOutputLayers"]


def fast_rcnn_inference(
    boxes: List[torch.Tensor],
    scores: List[torch.Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> Tuple[List[Instances], List[torch.Tensor]]:
    """Turn per-region box predictions and class probabilities into final detections.

    Runs :func:`fast_rcnn_inference_single_image` on every image.

    Args:
        boxes: per image, float ``[Ri, K*4]`` class-specific or ``[Ri, 4]`` class-agnostic
            absolute XYXY boxes (as from :meth:`FastRCNNOutputLayers.predict_boxes`).
        scores: per image, float ``[Ri, K+1]`` class probabilities, background last (as from
            :meth:`FastRCNNOutputLayers.predict_probs`).
        image_shapes: per image, ``(height, width)`` used to clip the boxes.
        score_thresh: keep (region, class) pairs whose score is strictly above this.
        nms_thresh: IoU threshold of the per-class NMS, in [0, 1].
        topk_per_image: keep at most this many detections per image; negative keeps all.

    Returns:
        list[Instances]: per image, detections sorted by decreasing score with fields
            ``pred_boxes`` (Boxes), ``scores`` (float ``[D]``), ``pred_classes`` (int64 ``[D]``).
        list[Tensor]: per image, int64 ``[D]``, the index in ``[0, Ri)`` of the input region
            each detection came from.
    """
    results = [
        fast_rcnn_inference_single_image(
            boxes_i, scores_i, shape_i, score_thresh, nms_thresh, topk_per_image
        )
        for boxes_i, scores_i, shape_i in zip(boxes, scores, image_shapes)
    ]
    return [instances for instances, _ in results], [kept for _, kept in results]


def fast_rcnn_inference_single_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: Tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> Tuple[Instances, torch.Tensor]:
    """Single-image version of :func:`fast_rcnn_inference`.

    Steps: drop regions whose boxes or scores contain a non-finite value, clip boxes to the
    image, keep (region, class) pairs with foreground score ``> score_thresh``, run NMS
    separately per class, keep the ``topk_per_image`` best.

    Args:
        boxes: float ``[Ri, K*4]`` or ``[Ri, 4]``.
        scores: float ``[Ri, K+1]``.
        image_shape: ``(height, width)``.
        score_thresh, nms_thresh, topk_per_image: see :func:`fast_rcnn_inference`.

    Returns:
        (Instances, Tensor): the detections and the int64 indices of their source regions.
        The indices refer to the rows of the inputs *after* dropping non-finite rows, as in
        detectron2.
    """
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(finite.all()):
        boxes, scores = boxes[finite], scores[finite]

    fg_scores = scores[:, :-1]
    num_reg_classes = boxes.shape[1] // 4
    clipped = Boxes(boxes.reshape(-1, 4))
    clipped.clip(image_shape)
    per_class_boxes = clipped.tensor.view(-1, num_reg_classes, 4)

    # Thresholding before NMS keeps NMS cheap; pairs are enumerated row-major (region, class).
    keep_mask = fg_scores > score_thresh
    pair_idx = keep_mask.nonzero()
    if num_reg_classes == 1:
        cand_boxes = per_class_boxes[pair_idx[:, 0], 0]
    else:
        cand_boxes = per_class_boxes[keep_mask]
    cand_scores = fg_scores[keep_mask]

    keep = batched_nms(cand_boxes, cand_scores, pair_idx[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]

    result = Instances(image_shape)
    result.pred_boxes = Boxes(cand_boxes[keep])
    result.scores = cand_scores[keep]
    result.pred_classes = pair_idx[keep, 1]
    return result, pair_idx[keep, 0]


def _log_classification_stats(
    pred_logits: torch.Tensor, gt_classes: torch.Tensor, prefix: str = "fast_rcnn"
) -> None:
    """Write classification accuracy scalars to the current EventStorage (needs one).

    Puts ``{prefix}/cls_accuracy`` over all regions and, when there is foreground,
    ``{prefix}/fg_cls_accuracy`` and ``{prefix}/false_negative`` (fraction of foreground
    regions predicted as background). Nothing is logged for an empty batch.

    Args:
        pred_logits: float ``[R, K+1]``, background column last.
        gt_classes: int64 ``[R]`` labels in ``[0, K]`` (or -1).
    """
    total = gt_classes.numel()
    if total == 0:
        return
    bg_class = pred_logits.shape[1] - 1
    pred_classes = pred_logits.argmax(dim=1)
    is_fg = (gt_classes >= 0) & (gt_classes < bg_class)
    num_fg = int(is_fg.sum())

    storage = get_event_storage()
    storage.put_scalar(f"{prefix}/cls_accuracy", int((pred_classes == gt_classes).sum()) / total)
    if num_fg > 0:
        fg_pred, fg_gt = pred_classes[is_fg], gt_classes[is_fg]
        storage.put_scalar(f"{prefix}/fg_cls_accuracy", int((fg_pred == fg_gt).sum()) / num_fg)
        storage.put_scalar(f"{prefix}/false_negative", int((fg_pred == bg_class).sum()) / num_fg)


class FastRCNNOutputLayers(nn.Module):
    """The Fast R-CNN predictor: two parallel linear layers on the box head's output.

    Topology::

        x [R, D] (flattened if it has more dims) --+--> cls_score --> logits [R, K+1]
                                                   +--> bbox_pred --> deltas [R, K*4] or [R, 4]

    ``losses`` turns predictions into ``loss_cls``/``loss_box_reg``; ``inference`` into
    detections via :func:`fast_rcnn_inference`.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: Union[float, Dict[str, float]] = 1.0,
    ):
        """
        Args:
            input_shape: shape of the per-region input feature; its flattened size
                ``channels * (height or 1) * (width or 1)`` is the linear layers' input size.
                A plain int is accepted as the channel count.
            box2box_transform: a :class:`Box2BoxTransform` defining the delta encoding.
            num_classes: K, the number of foreground classes.
            test_score_thresh: minimum foreground score of a detection at test time.
            test_nms_thresh: IoU threshold of the per-class NMS at test time.
            test_topk_per_image: maximum detections per image at test time (<0: all).
            cls_agnostic_bbox_reg: predict one box per region instead of one per class.
            smooth_l1_beta: beta of the smooth-L1 box loss (0 gives plain L1).
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            loss_weight: one multiplier for every loss, or a dict with keys among
                ``"loss_cls"`` / ``"loss_box_reg"`` (missing keys weigh 1.0).
        """
        super().__init__()
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        self.num_classes = num_classes
        in_features = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        box_dim = len(box2box_transform.weights)
        num_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes

        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, num_reg_classes * box_dim)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, numbers.Real):
            loss_weight = {"loss_cls": float(loss_weight), "loss_box_reg": float(loss_weight)}
        elif not isinstance(loss_weight, dict):
            raise TypeError(
                f"loss_weight must be a float or a dict of per-loss floats, got {loss_weight!r}"
            )
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        box_head = cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "box2box_transform": Box2BoxTransform(weights=box_head.BBOX_REG_WEIGHTS),
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "cls_agnostic_bbox_reg": box_head.CLS_AGNOSTIC_BBOX_REG,
            "smooth_l1_beta": box_head.SMOOTH_L1_BETA,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "box_reg_loss_type": box_head.BBOX_REG_LOSS_TYPE,
            "loss_weight": {"loss_box_reg": box_head.BBOX_REG_LOSS_WEIGHT},
        }

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: per-region features ``[R, D]`` or ``[R, C, H, W]`` (flattened here).

        Returns:
            logits float ``[R, K+1]`` (background last) and deltas float ``[R, K*4]``
            (class-specific) or ``[R, 4]`` (class-agnostic).
        """
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Classification and box regression losses; logs accuracy stats (needs EventStorage).

        Args:
            predictions: output of :meth:`forward` for the regions of ``proposals``.
            proposals: per image, the sampled regions with ``proposal_boxes`` and
                ``gt_classes``; ``gt_boxes`` too unless the image has no ground truth (then all
                its regions are background and take no box loss).

        Returns:
            ``{"loss_cls": mean cross entropy over all R regions, "loss_box_reg": box loss
            summed over foreground regions divided by R}``, each times its loss weight.
            Both are zero (and still connected to the graph) when R is 0.
        """
        logits, deltas = predictions
        if len(proposals):
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        else:
            gt_classes = torch.empty(0, dtype=torch.long, device=logits.device)
        _log_classification_stats(logits, gt_classes)

        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            if proposal_boxes.requires_grad:
                raise ValueError("proposal_boxes must not require gradients (detach them first)")
            # An image without ground truth has no gt_boxes; its regions are all background, so
            # any placeholder of the right shape works (it never enters the box loss).
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=deltas.device)

        losses = {
            "loss_cls": cross_entropy(logits, gt_classes, reduction="mean"),
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes),
        }
        return {name: value * self.loss_weight.get(name, 1.0) for name, value in losses.items()}

    def box_reg_loss(
        self,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        pred_deltas: torch.Tensor,
        gt_classes: torch.Tensor,
    ) -> torch.Tensor:
        """Box regression loss over foreground regions, normalised by the number of regions.

        Dividing by R (not by the foreground count) gives every foreground region the same
        weight whatever the foreground ratio of its batch.

        Args:
            proposal_boxes: float ``[R, 4]`` XYXY boxes the deltas are relative to.
            gt_boxes: float ``[R, 4]`` matched ground-truth boxes.
            pred_deltas: float ``[R, K*4]`` or ``[R, 4]``.
            gt_classes: int64 ``[R]``; only rows in ``[0, K)`` contribute.

        Returns:
            scalar float tensor (0 when R is 0 or there is no foreground).
        """
        box_dim = proposal_boxes.shape[1]
        fg_idx = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if pred_deltas.shape[1] == box_dim:
            fg_deltas = pred_deltas[fg_idx]
        else:
            fg_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[fg_idx, gt_classes[fg_idx]]

        num_fg = fg_idx.numel()
        loss = _dense_box_regression_loss(
            [Boxes(proposal_boxes[fg_idx])],
            self.box2box_transform,
            [fg_deltas.unsqueeze(0)],
            [gt_boxes[fg_idx]],
            torch.ones((1, num_fg), dtype=torch.bool, device=pred_deltas.device),
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return loss / max(gt_classes.numel(), 1.0)

    def inference(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> Tuple[List[Instances], List[torch.Tensor]]:
        """Decode, score and post-process predictions into detections.

        Args:
            predictions: output of :meth:`forward`.
            proposals: per image, Instances with ``proposal_boxes`` (and ``image_size``).

        Returns:
            the same as :func:`fast_rcnn_inference`, with this module's test thresholds.
        """
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [p.image_size for p in proposals]
        return fast_rcnn_inference(
            boxes,
            scores,
            image_shapes,
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )

    def predict_boxes_for_gt_classes(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Decoded box of each region for its ground-truth class.

        Background/ignored labels are clamped into ``[0, K-1]`` so they still index a box.

        Args:
            predictions: output of :meth:`forward`.
            proposals: per image, Instances with ``proposal_boxes`` and ``gt_classes``.

        Returns:
            per image, float ``[Ri, 4]``; ``[]`` when there are no images.
        """
        if not len(proposals):
            return []
        _, deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        num_regions, box_dim = proposal_boxes.shape
        decoded = self.box2box_transform.apply_deltas(deltas, proposal_boxes)
        num_reg_classes = decoded.shape[1] // box_dim
        if num_reg_classes > 1:
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            gt_classes = gt_classes.clamp(0, num_reg_classes - 1)
            rows = torch.arange(num_regions, dtype=torch.long, device=decoded.device)
            decoded = decoded.view(num_regions, num_reg_classes, box_dim)[rows, gt_classes]
        return decoded.split([p.__len__() for p in proposals])

    def predict_boxes(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Apply the predicted deltas to the proposal boxes.

        Args:
            predictions: output of :meth:`forward`.
            proposals: per image, Instances with ``proposal_boxes``.

        Returns:
            per image, float ``[Ri, K*4]`` or ``[Ri, 4]`` absolute XYXY boxes; ``[]`` when there
            are no images.
        """
        if not len(proposals):
            return []
        _, deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        decoded = self.box2box_transform.apply_deltas(deltas, proposal_boxes)
        return decoded.split([p.__len__() for p in proposals])

    def predict_probs(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Softmax class probabilities.

        Args:
            predictions: output of :meth:`forward`.
            proposals: per image, Instances (only their lengths are used).

        Returns:
            per image, float ``[Ri, K+1]``, background last.
        """
        logits, _ = predictions
        probs = F.softmax(logits, dim=-1)
        return probs.split([p.__len__() for p in proposals], dim=0)
