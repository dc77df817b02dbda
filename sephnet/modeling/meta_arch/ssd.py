"""SephSSD: the Single Shot MultiBox Detector (Liu et al. 2016) as a detectron2 meta-architecture.

::

    images -> normalise -> resize to S x S (the network's fixed square input; boxes scale with it)
           -> backbone (SSDBackbone: base + extra layers) -> L feature maps
           -> SSDHead -> (N, P, K + 1) class logits, (N, P, 4) box deltas
    priors (SSDPriorGenerator, from the L map sizes) -> (P, 4)

Training (per image): :func:`~sephnet.modeling.matchers.ssd_matcher.match_priors` (each
ground truth's best prior, then priors with IoU >= threshold); softmax cross-entropy over
the positives and the hard negatives (:func:`~sephnet.modeling.losses.hard_negative_mining.
hard_negative_mask`, 3 per positive), smooth L1 on the positives' deltas (encoded with
``Box2BoxTransform`` weights (10, 10, 5, 5), i.e. SSD's variances 0.1 / 0.2); both summed
over the batch and divided by its number of positives. Loss keys ``loss_cls`` and
``loss_box_reg`` (detectron2's).

Inference (per image): softmax scores of the K classes, (prior, class) pairs above the
score threshold, the top-k of them, decoded boxes, NMS per class, then the best
``max_detections_per_image``; boxes are rescaled from the S x S input to the requested
output size (``height`` / ``width`` of the input dict, else the image's own).
"""
from typing import Dict, List, Sequence, Tuple

import torch
from fvcore.nn import smooth_l1_loss
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    META_ARCH_REGISTRY,
    Backbone,
    Box2BoxTransform,
    Boxes,
    CfgNode,
    Instances,
    batched_nms,
    build_backbone,
    configurable,
    detector_postprocess,
    get_event_storage,
    pairwise_iou,
)
from sephnet.modeling.anchor.ssd_priors import SSDPriorGenerator
from sephnet.modeling.losses.hard_negative_mining import hard_negative_mask
from sephnet.modeling.matchers.ssd_matcher import match_priors
from sephnet.modeling.meta_arch.ssd_head import SSDHead

__all__ = ["SephSSD"]


def _check_levels(feature_maps: int, prior_levels: int, head_levels: int) -> None:
    if not feature_maps == prior_levels == head_levels:
        raise ValueError(
            f"SSD: the backbone gives {feature_maps} feature maps, the priors are set for "
            f"{prior_levels} levels and the head for {head_levels}; they must agree "
            "(MODEL.SEPH.SSD.PRIOR_* lists: one entry per feature map)."
        )


@META_ARCH_REGISTRY.register()
class SephSSD(nn.Module):
    """SSD (see the module docstring). The training forward needs an ``EventStorage``
    (it records ``num_pos_priors``, the positives per image)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: SSDHead,
        prior_generator: SSDPriorGenerator,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        input_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        iou_threshold: float = 0.5,
        neg_pos_ratio: float = 3.0,
        smooth_l1_beta: float = 1.0,
        score_threshold: float = 0.02,
        topk_candidates: int = 1000,
        nms_threshold: float = 0.45,
        max_detections_per_image: int = 200,
    ):
        """
        Args:
            backbone: returns L feature maps (finest first) for an ``(N, 3, S, S)`` input.
            head: the per-level class and box convolutions (A_l priors per location).
            prior_generator: the priors of the L levels, in the head's order.
            box2box_transform: encodes ground truth against priors (SSD: weights (10, 10, 5, 5)).
            num_classes: K, the foreground classes (background is class K).
            input_size: S, the side of the square the network sees.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
            iou_threshold: IoU from which a prior is positive.
            neg_pos_ratio: hard negatives per positive.
            smooth_l1_beta: the smooth L1 loss's beta (0 gives L1).
            score_threshold, topk_candidates, nms_threshold, max_detections_per_image:
                inference, as in the module docstring.
        """
        super().__init__()
        _check_levels(len(backbone.output_shape()), len(prior_generator.min_sizes), len(head.cls_convs))
        self.backbone = backbone
        self.head = head
        self.prior_generator = prior_generator
        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.input_size = input_size
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.smooth_l1_beta = smooth_l1_beta
        self.score_threshold = score_threshold
        self.topk_candidates = topk_candidates
        self.nms_threshold = nms_threshold
        self.max_detections_per_image = max_detections_per_image
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict:
        ssd = cfg.MODEL.SEPH.SSD
        backbone = build_backbone(cfg)
        shapes = list(backbone.output_shape().values())
        _check_levels(len(shapes), len(ssd.PRIOR_MIN_SIZES), len(shapes))
        priors = SSDPriorGenerator(
            min_sizes=tuple(ssd.PRIOR_MIN_SIZES),
            max_sizes=tuple(ssd.PRIOR_MAX_SIZES),
            aspect_ratios=[tuple(r) for r in ssd.PRIOR_ASPECT_RATIOS],
            strides=tuple(ssd.PRIOR_STRIDES),
            offset=ssd.PRIOR_OFFSET,
            clip_size=float(ssd.INPUT_SIZE) if ssd.PRIOR_CLIP else 0.0,
        )
        head = SSDHead(
            in_channels=[s.channels for s in shapes],
            num_priors=priors.num_priors_per_location,
            num_classes=ssd.NUM_CLASSES,
        )
        return dict(
            backbone=backbone,
            head=head,
            prior_generator=priors,
            box2box_transform=Box2BoxTransform(weights=tuple(ssd.BBOX_REG_WEIGHTS)),
            num_classes=ssd.NUM_CLASSES,
            input_size=ssd.INPUT_SIZE,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            iou_threshold=ssd.IOU_THRESHOLD,
            neg_pos_ratio=ssd.NEG_POS_RATIO,
            smooth_l1_beta=ssd.SMOOTH_L1_BETA,
            score_threshold=ssd.SCORE_THRESH_TEST,
            topk_candidates=ssd.TOPK_CANDIDATES_TEST,
            nms_threshold=ssd.NMS_THRESH_TEST,
            max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ shared steps
    def preprocess_image(self, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalise each ``(3, H_i, W_i)`` image and resize it to ``S x S`` (bilinear).

        Returns:
            ``(N, 3, S, S)`` float images and the N input sizes ``(H_i, W_i)``.
        """
        size = self.input_size
        images, sizes = [], []
        for x in batched_inputs:
            image = (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            sizes.append(tuple(image.shape[-2:]))
            if sizes[-1] != (size, size):
                image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
            images.append(image)
        return torch.stack(images), sizes

    def _predict(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = list(self.backbone(images).values())
        cls_logits, box_deltas = self.head(features)
        priors = torch.cat(self.prior_generator([f.shape[-2:] for f in features], device=images.device))
        return cls_logits, box_deltas, priors

    def forward(self, batched_inputs: List[Dict]):
        """detectron2's model interface.

        Args:
            batched_inputs: dicts with ``image`` (``(3, H, W)``, INPUT.FORMAT channels), in
                training ``instances`` (``gt_boxes`` in the image's pixels, ``gt_classes``),
                optionally ``height`` / ``width`` (the output resolution at inference).

        Returns:
            In training, ``{"loss_cls", "loss_box_reg"}``; otherwise a list of
            ``{"instances": Instances}`` with ``pred_boxes``, ``scores``, ``pred_classes``.
        """
        images, sizes = self.preprocess_image(batched_inputs)
        cls_logits, box_deltas, priors = self._predict(images)
        if self.training:
            gt_classes, gt_deltas = self.label_priors(priors, batched_inputs, sizes)
            return self.losses(cls_logits, box_deltas, gt_classes, gt_deltas)
        results = []
        for i, x in enumerate(batched_inputs):
            detections = self.inference_single_image(cls_logits[i], box_deltas[i], priors)
            height, width = x.get("height", sizes[i][0]), x.get("width", sizes[i][1])
            results.append({"instances": detector_postprocess(detections, height, width)})
        return results

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def label_priors(
        self, priors: torch.Tensor, batched_inputs: List[Dict], sizes: List[Tuple[int, int]]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Match every image's ground truth (scaled to the S x S input) to the priors.

        Returns:
            gt_classes: int64 ``(N, P)``, the class of every prior (K = background).
            gt_deltas: ``(N, P, 4)``, the matched box encoded against each prior (meaningful
                for positives only).
        """
        all_classes, all_deltas = [], []
        for x, (height, width) in zip(batched_inputs, sizes):
            instances = x["instances"].to(self.device)
            scale = torch.tensor(
                [self.input_size / width, self.input_size / height] * 2, device=self.device
            )
            gt_boxes = instances.gt_boxes.tensor * scale
            matched, labels = match_priors(pairwise_iou(Boxes(gt_boxes), Boxes(priors)), self.iou_threshold)
            if len(gt_boxes) == 0:
                classes = torch.full_like(matched, self.num_classes)
                deltas = torch.zeros_like(priors)
            else:
                classes = torch.where(
                    labels == 1, instances.gt_classes[matched], torch.full_like(matched, self.num_classes)
                )
                deltas = self.box2box_transform.get_deltas(priors, gt_boxes[matched])
            all_classes.append(classes)
            all_deltas.append(deltas)
        return torch.stack(all_classes), torch.stack(all_deltas)

    def losses(
        self,
        cls_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        gt_classes: torch.Tensor,
        gt_deltas: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """SSD's loss (module docstring); shapes as :meth:`label_priors` and the head return."""
        positive = gt_classes != self.num_classes  # (N, P)
        num_positive = int(positive.sum())
        get_event_storage().put_scalar("num_pos_priors", num_positive / len(gt_classes))
        cls_loss = F.cross_entropy(
            cls_logits.flatten(0, 1), gt_classes.flatten(), reduction="none"
        ).view_as(gt_classes)
        chosen = positive.clone()
        for i in range(len(gt_classes)):
            chosen[i] |= hard_negative_mask(cls_loss[i], positive[i], self.neg_pos_ratio)
        normalizer = max(num_positive, 1)
        loss_box = smooth_l1_loss(
            box_deltas[positive], gt_deltas[positive], self.smooth_l1_beta, reduction="sum"
        )
        return {
            "loss_cls": (cls_loss * chosen).sum() / normalizer,
            "loss_box_reg": loss_box / normalizer,
        }

    # ------------------------------------------------------------------ inference
    def inference_single_image(
        self, cls_logits: torch.Tensor, box_deltas: torch.Tensor, priors: torch.Tensor
    ) -> Instances:
        """Detections of one image in the S x S input's pixels.

        Args:
            cls_logits: ``(P, K + 1)``; box_deltas: ``(P, 4)``; priors: ``(P, 4)``.

        Returns:
            ``Instances`` of size ``(S, S)`` with at most ``max_detections_per_image``
            detections, best first.
        """
        scores = F.softmax(cls_logits, dim=-1)[:, : self.num_classes].flatten()
        candidates = torch.nonzero(scores > self.score_threshold).squeeze(1)
        top = scores[candidates].topk(min(self.topk_candidates, len(candidates))).indices
        candidates = candidates[top]
        prior_index, classes = candidates // self.num_classes, candidates % self.num_classes
        boxes = Boxes(self.box2box_transform.apply_deltas(box_deltas[prior_index], priors[prior_index]))
        boxes.clip((self.input_size, self.input_size))
        keep = batched_nms(boxes.tensor, scores[candidates], classes, self.nms_threshold)
        keep = keep[: self.max_detections_per_image]
        result = Instances((self.input_size, self.input_size))
        result.pred_boxes = boxes[keep]
        result.scores = scores[candidates][keep]
        result.pred_classes = classes[keep]
        return result
