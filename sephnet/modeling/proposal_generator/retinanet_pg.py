"""``SephRetinaNetPG``: a one-class RetinaNet used as the proposal generator (sephv9,
docs/components.md#retinanet-proposal-generator)."""
from typing import Dict, List, Optional, Tuple

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch import nn

from sephnet.backend import (
    PROPOSAL_GENERATOR_REGISTRY,
    Box2BoxTransform,
    Boxes,
    ImageList,
    Instances,
    Matcher,
    ShapeSpec,
    build_anchor_generator,
    cat,
    configurable,
    _dense_box_regression_loss,
    find_top_rpn_proposals,
    get_event_storage,
    nms,
    pairwise_iou,
)
from sephnet.layers.losses import BOX_REG_LOSS_TYPES
from sephnet.modeling.proposal_generator.retinanet_pg_head import RetinaNetPGHead

__all__ = ["SephRetinaNetPG"]


def _flatten_levels(logits, deltas, box_dim):
    """``[N, A, H, W]`` -> ``[N, H*W*A]`` and ``[N, A*box_dim, H, W]`` -> ``[N, H*W*A, box_dim]``,
    in the anchor generator's order (position major, anchor minor)."""
    flat_logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
    flat_deltas = []
    for x in deltas:
        n, _, h, w = x.shape
        flat_deltas.append(x.view(n, -1, box_dim, h, w).permute(0, 3, 4, 1, 2).flatten(1, -2))
    return flat_logits, flat_deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class SephRetinaNetPG(nn.Module):
    """RetinaNet with one foreground class, producing proposals for the ROI heads.

    ::

        features[L levels] --RetinaNetPGHead--> logits [N, A, H_l, W_l], deltas [N, 4A, ...]
        train: anchors --Matcher (IoU lo/hi, low-quality matches)--> labels {-1, 0, 1}
               loss_rpn_cls = sigmoid focal over non-ignored anchors / max(1, #pos)
               loss_rpn_loc = box loss (GIoU / smooth L1 / ...) over positives / max(1, #pos)
               proposals = find_top_rpn_proposals(decoded boxes, logits)   (as detectron2's RPN)
        test:  per level: sigmoid > score_thresh, top-k candidates, decode;
               all levels: clip, drop tiny, NMS, keep detections_per_image

    Returns, like detectron2's RPN, N ``Instances`` with ``proposal_boxes`` and
    ``objectness_logits`` (the raw logit), sorted by decreasing score, and the loss dict
    (empty at test time). No anchor sampling: every non-ignored anchor counts (the original).
    The normaliser is the batch's positive count, not detectron2 RetinaNet's moving average.
    Training needs an EventStorage (logs ``rpn/num_pos_anchors`` / ``num_neg_anchors``).
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        pre_nms_topk: Tuple[int, int],
        post_nms_topk: Tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        box_reg_loss_type: str = "giou",
        smooth_l1_beta: float = 0.0,
        loss_weight: Optional[Dict[str, float]] = None,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        test_detections_per_image: int = 100,
    ):
        """
        Args:
            in_features: the L feature names used, in order.
            head: maps L maps to (logits ``[N, A, H, W]``, deltas ``[N, 4A, H, W]``) lists,
                e.g. :class:`RetinaNetPGHead`.
            anchor_generator: detectron2's anchor generator for the L levels.
            anchor_matcher: labels anchors 1 / 0 / -1 (ignored) from their IoU with the gt.
            box2box_transform: the anchor box coder (sephv9: weights (1, 1, 1, 1)).
            pre_nms_topk, post_nms_topk: (train, test) of ``find_top_rpn_proposals``
                (per level before NMS; per image after). Only the train values are used:
                test-time proposals come from the RetinaNet inference.
            nms_thresh: NMS IoU of the training proposals.
            min_box_size: proposals with a side below this (pixels) are dropped.
            focal_loss_alpha, focal_loss_gamma: sigmoid focal loss parameters.
            box_reg_loss_type: ``"smooth_l1"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
            smooth_l1_beta: beta of the smooth L1 loss.
            loss_weight: weights of ``loss_rpn_cls`` and ``loss_rpn_loc`` (missing: 1).
            test_score_thresh: test candidates need sigmoid(logit) > this.
            test_topk_candidates: at most this many candidates per level at test time.
            test_nms_thresh: NMS IoU at test time.
            test_detections_per_image: at most this many proposals per image at test time.

        Raises:
            ValueError: an unknown ``box_reg_loss_type``.
        """
        super().__init__()
        if box_reg_loss_type not in BOX_REG_LOSS_TYPES:
            raise ValueError(
                f"SephRetinaNetPG: box_reg_loss_type={box_reg_loss_type!r}; expected one of "
                f"{', '.join(map(repr, BOX_REG_LOSS_TYPES))}."
            )
        self.in_features = list(in_features)
        self.head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = {"loss_rpn_cls": 1.0, "loss_rpn_loc": 1.0, **(loss_weight or {})}
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.test_detections_per_image = test_detections_per_image

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = list(cfg.MODEL.RPN.IN_FEATURES)
        shapes = [input_shape[f] for f in in_features]
        channels = sorted({s.channels for s in shapes})
        if len(channels) != 1:
            raise ValueError(
                f"SephRetinaNetPG shares its towers across MODEL.RPN.IN_FEATURES={in_features}; "
                f"their channels must be equal, got {channels}."
            )
        anchor_generator = build_anchor_generator(cfg, shapes)
        num_anchors = sorted(set(anchor_generator.num_anchors))
        if len(num_anchors) != 1:
            raise ValueError(
                "SephRetinaNetPG needs the same number of anchors per position on every level "
                f"(MODEL.ANCHOR_GENERATOR), got {anchor_generator.num_anchors}."
            )
        retina = cfg.MODEL.RETINANET
        head = RetinaNetPGHead(
            in_channels=channels[0],
            num_anchors=num_anchors[0],
            num_levels=len(in_features),
            num_convs=retina.NUM_CONVS,
            norm=cfg.MODEL.SEPH.RETINANET_PG.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
            prior_prob=retina.PRIOR_PROB,
            box_dim=anchor_generator.box_dim,
        )
        rpn = cfg.MODEL.RPN
        return {
            "in_features": in_features,
            "head": head,
            "anchor_generator": anchor_generator,
            "anchor_matcher": Matcher(
                retina.IOU_THRESHOLDS, retina.IOU_LABELS, allow_low_quality_matches=True
            ),
            "box2box_transform": Box2BoxTransform(weights=retina.BBOX_REG_WEIGHTS),
            "pre_nms_topk": (rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            "nms_thresh": rpn.NMS_THRESH,
            "min_box_size": cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            "focal_loss_alpha": retina.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": retina.FOCAL_LOSS_GAMMA,
            "box_reg_loss_type": retina.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": retina.SMOOTH_L1_LOSS_BETA,
            "loss_weight": {
                "loss_rpn_cls": rpn.LOSS_WEIGHT,
                "loss_rpn_loc": rpn.BBOX_REG_LOSS_WEIGHT * rpn.LOSS_WEIGHT,
            },
            "test_score_thresh": retina.SCORE_THRESH_TEST,
            "test_topk_candidates": retina.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": retina.NMS_THRESH_TEST,
            "test_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ):
        """
        Args:
            images: the N input images (only ``image_sizes`` is read).
            features: feature maps by name, ``[N, C, H_l, W_l]``.
            gt_instances: N Instances with ``gt_boxes`` (training only).

        Returns:
            N Instances (``proposal_boxes``, ``objectness_logits``; sorted by score) and a
            dict of losses (``loss_rpn_cls``, ``loss_rpn_loc``; empty at test time).
        """
        maps = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(maps)
        logits, deltas = self.head(maps)
        logits, deltas = _flatten_levels(logits, deltas, anchors[0].tensor.shape[1])
        if self.training:
            if gt_instances is None:
                raise ValueError("SephRetinaNetPG needs gt_instances in training mode.")
            gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)
            proposals = self._training_proposals(anchors, logits, deltas, images.image_sizes)
            return proposals, losses
        proposals = [
            self._inference_single_image(
                anchors, [x[i] for x in logits], [x[i] for x in deltas], size
            )
            for i, size in enumerate(images.image_sizes)
        ]
        return proposals, {}

    @torch.no_grad()
    def label_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Match every anchor of every image.

        Returns:
            N int8-valued tensors ``[R]`` in {-1, 0, 1} (R = anchors of all levels) and
            N float tensors ``[R, 4]``, the matched gt box (zeros without gt).
        """
        all_anchors = Boxes.cat(anchors)
        labels, boxes = [], []
        for gt in gt_instances:
            iou = pairwise_iou(gt.gt_boxes, all_anchors)  # [G, R]
            matched_idxs, match_labels = self.anchor_matcher(iou)
            if len(gt) > 0:
                matched_boxes = gt.gt_boxes.tensor[matched_idxs]
            else:
                matched_boxes = torch.zeros_like(all_anchors.tensor)
                match_labels = torch.zeros_like(match_labels)
            labels.append(match_labels)
            boxes.append(matched_boxes)
        return labels, boxes

    def losses(
        self,
        anchors: List[Boxes],
        pred_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Focal and box losses, both summed and divided by max(1, positives in the batch).

        Args:
            anchors: L Boxes ``[R_l, 4]``.
            pred_logits: L tensors ``[N, R_l]``.
            gt_labels: N tensors ``[R]`` in {-1, 0, 1}.
            pred_deltas: L tensors ``[N, R_l, 4]``.
            gt_boxes: N tensors ``[R, 4]``.

        Returns:
            ``{"loss_rpn_cls", "loss_rpn_loc"}``, each times its ``loss_weight``.
        """
        labels = torch.stack(gt_labels)  # [N, R]
        valid = labels >= 0
        pos = labels == 1
        num_pos = int(pos.sum().item())
        storage = get_event_storage()
        storage.put_scalar("rpn/num_pos_anchors", num_pos / len(gt_labels))
        storage.put_scalar("rpn/num_neg_anchors", int((labels == 0).sum().item()) / len(gt_labels))
        normalizer = max(1, num_pos)
        logits = cat(pred_logits, dim=1)
        loss_cls = sigmoid_focal_loss_jit(
            logits[valid],
            pos[valid].to(logits.dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_loc = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_deltas,
            gt_boxes,
            pos,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        losses = {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_loc": loss_loc / normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    @torch.no_grad()
    def _training_proposals(self, anchors, logits, deltas, image_sizes) -> List[Instances]:
        """detectron2's RPN proposal selection on the decoded anchors and their logits."""
        decoded = []
        for anchors_l, deltas_l in zip(anchors, deltas):
            n, r, box_dim = deltas_l.shape
            boxes = self.box2box_transform.apply_deltas(
                deltas_l.reshape(-1, box_dim),
                anchors_l.tensor.unsqueeze(0).expand(n, -1, -1).reshape(-1, box_dim),
            )
            decoded.append(boxes.view(n, r, box_dim))
        return find_top_rpn_proposals(
            decoded,
            [x.detach() for x in logits],
            image_sizes,
            self.nms_thresh,
            self.pre_nms_topk[True],
            self.post_nms_topk[True],
            self.min_box_size,
            True,
        )

    @torch.no_grad()
    def _inference_single_image(self, anchors, logits, deltas, image_size) -> Instances:
        """RetinaNet inference with one class.

        Args:
            anchors: L Boxes ``[R_l, 4]``; logits: L ``[R_l]``; deltas: L ``[R_l, 4]``.
            image_size: (height, width).

        Returns:
            Instances with ``proposal_boxes`` and ``objectness_logits``, at most
            ``test_detections_per_image``, sorted by decreasing score.
        """
        boxes_all, logits_all = [], []
        for anchors_l, logits_l, deltas_l in zip(anchors, logits, deltas):
            keep = (logits_l.sigmoid() > self.test_score_thresh).nonzero().squeeze(1)
            top = logits_l[keep].sort(descending=True).indices[: self.test_topk_candidates]
            keep = keep[top]
            boxes_all.append(
                self.box2box_transform.apply_deltas(deltas_l[keep], anchors_l.tensor[keep])
            )
            logits_all.append(logits_l[keep])
        boxes = Boxes(cat(boxes_all))
        scores = cat(logits_all)
        boxes.clip(image_size)
        valid = boxes.nonempty(threshold=self.min_box_size) & torch.isfinite(scores)
        boxes, scores = boxes[valid], scores[valid]
        # NMS on logits ranks as on probabilities (sigmoid is monotonic)
        keep = nms(boxes.tensor, scores, self.test_nms_thresh)[: self.test_detections_per_image]
        result = Instances(image_size)
        result.proposal_boxes = boxes[keep]
        result.objectness_logits = scores[keep]
        return result
