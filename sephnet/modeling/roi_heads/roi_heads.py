"""``SephStandardROIHeads``: StandardROIHeads with sephnet's box head, predictor and sampler.

Only two documented hooks change (STYLE rule 4):

* ``_init_box_head`` builds the pooler as detectron2 does, then the decoupled box head
  (``MODEL.SEPH.BOX_HEAD.NAME``) and the predictor (``MODEL.SEPH.PREDICTOR.NAME``) from
  sephnet's registries;
* ``label_and_sample_proposals`` keeps detectron2's append-gt and max-IoU ``Matcher``
  (``MODEL.ROI_HEADS.IOU_THRESHOLDS / IOU_LABELS``), asks the configured ROI sampler
  (``MODEL.SEPH.SAMPLER.NAME``) which proposals to keep, and adds the fields sephnet's
  predictor reads (``gt_ious``, ``gt_is_matched``).

Everything else (``_forward_box``, the mask head and its pooler) is the backend's; ``forward``
is too, except in training with a sampler that ranks by loss (OHEM), where it passes the
features on to ``label_and_sample_proposals``.
"""
from typing import Dict, List, Optional

import torch
from torch import nn

from sephnet.backend import (
    ROI_HEADS_REGISTRY,
    Instances,
    ROIPooler,
    ShapeSpec,
    StandardROIHeads,
    configurable,
    get_event_storage,
    import_module,
    pairwise_iou,
)
from sephnet.modeling.head_tricks import apply_head_tricks
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY, get_registered
from sephnet.modeling.roi_heads.build_predictor import build_box_predictor
from sephnet.modeling.roi_heads.multiscale_pooler import MultiScaleROIPooler
from sephnet.modeling.roi_heads.roi_hooks import HookedBoxHead, build_roi_hook
from sephnet.modeling.roi_heads.size_expert_head import BoxSizeROIPooler
from sephnet.modeling.samplers import ROISampler, RandomROISampler, build_roi_sampler

__all__ = ["SephStandardROIHeads"]


@ROI_HEADS_REGISTRY.register()
class SephStandardROIHeads(StandardROIHeads):
    """Standard ROI heads whose box branch and ROI sampling are sephnet plug points.

    ::

        training only:  proposals + gt --append gt--> Matcher (max IoU) --> labels, gt_ious
                                      --roi_sampler--> <= BATCH_SIZE_PER_IMAGE ROIs / image
        features{L levels} --box_pooler--> x[R, C, S, S]
                              (MULTISCALE_POOLER: ContextPair(box, context);
                               SizeExpertHead: SizedFeatures(x, sqrt(area)))
            [--roi hook (MODEL.SEPH.ROI_HOOK.NAME)--> x' | DecoupledFeatures(cls_in, box_in, ..)]
            --box_head (SEPH_BOX_HEAD_REGISTRY)--> DecoupledFeatures(cls, box[, iou])
            --box_predictor (SEPH_BOX_PREDICTOR_REGISTRY)--> losses | detections
        features --mask_pooler--> mask_head (ROI_MASK_HEAD.NAME), on foreground ROIs

    With sephnet's default keys (``UpstreamBoxHead``, ``SephOutputLayers`` with a linear
    classifier, ``RandomROISampler``) it computes exactly what detectron2's
    ``StandardROIHeads`` computes: same losses for the same inputs, weights and seed.

    Fields of the sampled training proposals (``R_i`` per image, ``K`` = NUM_CLASSES):

    * ``gt_classes`` int64 ``[R_i]``: the matcher's class, K = background (as detectron2);
    * ``gt_ious`` float ``[R_i]``: IoU with the matched gt (the largest IoU with any gt);
      0 in an image without gt; appended gt boxes have 1;
    * ``gt_is_matched`` bool ``[R_i]``: the matcher's foreground decision (label 1);
    * every other ``gt_*`` field of the targets (``gt_boxes``, ``gt_masks``, ...) indexed by
      the matched gt, only for images that have gt (as detectron2).

    ``pos_labels_threshold`` (the original's POS_LABELS_THRESHOLD, B §2.10 item 3): matched
    ROIs with IoU <= threshold are offered to the sampler as background, as in the original,
    while their ``gt_classes`` stays the matched class so box regression and the mask head
    still train on them; the predictor (same key) classifies them as background.

    The sephv10 "shared head" flow (box pooling reused by the mask head, Res5ROIHeads-style)
    is not offered: the log's sephv10 row ran without masks, and the box path (pool, head,
    predictor) is this class with ``SharedConvHead``.
    """

    @configurable
    def __init__(
        self,
        *,
        roi_sampler: Optional[ROISampler] = None,
        pos_labels_threshold: float = 0.0,
        **kwargs,
    ):
        """
        Args:
            roi_sampler: picks the training ROIs of each image (see
                :mod:`sephnet.modeling.samplers.base`); None means ``RandomROISampler()``
                (detectron2's ``subsample_labels``).
            pos_labels_threshold: IoU in [0, 1); 0 = off. Matched proposals with IoU <= it
                are sampled as background (see the class docstring).
            kwargs: the arguments of the backend's ``StandardROIHeads`` (``box_in_features``,
                ``box_pooler``, ``box_head``, ``box_predictor``, ``mask_*``,
                ``num_classes``, ``batch_size_per_image``, ``positive_fraction``,
                ``proposal_matcher``, ``proposal_append_gt``, ...). ``box_head`` returns
                what ``box_predictor`` takes (a ``DecoupledFeatures`` for sephnet's heads).

        Raises:
            ValueError: ``pos_labels_threshold`` is outside [0, 1).
            TypeError: ``roi_sampler`` is not callable.
        """
        super().__init__(**kwargs)
        if not 0.0 <= pos_labels_threshold < 1.0:
            raise ValueError(
                f"SephStandardROIHeads: pos_labels_threshold={pos_labels_threshold!r}; "
                "expected a number in [0, 1)."
            )
        if roi_sampler is not None and not callable(roi_sampler):
            raise TypeError(
                f"SephStandardROIHeads: roi_sampler must be callable (an ROI sampler); got "
                f"{type(roi_sampler).__name__}."
            )
        self.roi_sampler = roi_sampler if roi_sampler is not None else RandomROISampler()
        self.pos_labels_threshold = float(pos_labels_threshold)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["roi_sampler"] = build_roi_sampler(cfg)
        ret["pos_labels_threshold"] = cfg.MODEL.SEPH.PREDICTOR.POS_LABELS_THRESHOLD
        # MODEL.SEPH.HEAD_ACTIVATION / DROPBLOCK.HEADS (cascade: "box_heads")
        box = ret["box_head"] if "box_head" in ret else nn.ModuleList(ret["box_heads"])
        heads = {"box": box}
        if "mask_head" in ret:
            heads["mask"] = ret["mask_head"]
        apply_head_tricks(cfg, heads)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        # One box head serves every level, so all pooled levels must have the same width.
        channels = sorted({input_shape[f].channels for f in in_features})
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES={in_features} have different channel counts "
                f"{channels}; the shared box head needs one."
            )
        pooler_kwargs = dict(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        multiscale = cfg.MODEL.SEPH.MULTISCALE_POOLER
        if multiscale.ENABLED:  # (box, context) crops, B §2.11
            box_pooler = MultiScaleROIPooler(
                context_scale=multiscale.CONTEXT_SCALE,
                context_resolution=multiscale.CONTEXT_RESOLUTION,
                **pooler_kwargs,
            )
        else:
            box_pooler = ROIPooler(**pooler_kwargs)
        head_cls = get_registered(
            SEPH_BOX_HEAD_REGISTRY, cfg.MODEL.SEPH.BOX_HEAD.NAME, "MODEL.SEPH.BOX_HEAD.NAME"
        )
        if getattr(head_cls, "input_kind", "pooled") == "box_sizes":  # V9 size experts
            box_pooler = BoxSizeROIPooler(box_pooler)
        pooled_shape = ShapeSpec(channels=channels[0], height=resolution, width=resolution)
        box_head = head_cls(cfg, pooled_shape)
        roi_hook = build_roi_hook(cfg, pooled_shape)  # MODEL.SEPH.ROI_HOOK.NAME, B §2.13
        if roi_hook is not None:
            box_head = HookedBoxHead(roi_hook, box_head)
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            # with the coder of MODEL.SEPH.BOX_CODER.NAME (sephv24's corner offsets)
            "box_predictor": build_box_predictor(cfg, box_head.output_shapes),
        }

    def forward(self, images, features, proposals, targets=None):
        """The backend's ``forward``; in training with an OHEM-style sampler
        (``roi_sampler.ranks_by_loss``) the same steps with the features handed to
        :meth:`label_and_sample_proposals`."""
        if not (self.training and getattr(self.roi_sampler, "ranks_by_loss", False)):
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("ROI heads in training mode need 'targets'")
        proposals = self.label_and_sample_proposals(proposals, targets, features=features)
        losses = self._forward_box(features, proposals)
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    @torch.no_grad()
    def label_and_sample_proposals(
        self,
        proposals: List[Instances],
        targets: List[Instances],
        features: Optional[Dict[str, torch.Tensor]] = None,
    ) -> List[Instances]:
        """Match proposals to gt, sample the training ROIs and attach their targets.

        Needs an EventStorage (logs ``roi_head/num_fg_samples`` / ``num_bg_samples``, the
        per-image means, as detectron2 does).

        Args:
            proposals: N Instances with ``proposal_boxes`` and ``objectness_logits``.
            targets: N Instances with ``gt_boxes``, ``gt_classes`` (and optional ``gt_*``).
            features: the feature maps; needed only by a sampler with ``ranks_by_loss``
                (OHEM), which gets every candidate's classification loss from a forward
                pass of the box head and predictor in the current mode, without gradients.

        Returns:
            N Instances, the sampled proposals with the fields of the class docstring.
        """
        if self.proposal_append_gt:
            add_gt = import_module("modeling.proposal_generator.proposal_utils")
            proposals = add_gt.add_ground_truth_to_proposals(targets, proposals)
        matches = [self._match_image(p, t) for p, t in zip(proposals, targets)]
        roi_losses = [None] * len(proposals)
        if getattr(self.roi_sampler, "ranks_by_loss", False):
            if features is None:
                raise ValueError(
                    f"{type(self.roi_sampler).__name__} ranks proposals by their loss; "
                    "label_and_sample_proposals needs the features."
                )
            roi_losses = self._candidate_losses(features, proposals, matches)
        sampled, num_fg, num_bg = [], [], []
        for proposals_i, targets_i, match_i, losses_i in zip(
            proposals, targets, matches, roi_losses
        ):
            sampled_i, fg_i = self._sample_image(proposals_i, targets_i, match_i, losses_i)
            sampled.append(sampled_i)
            num_fg.append(fg_i)
            num_bg.append(len(sampled_i) - fg_i)
        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", sum(num_fg) / max(len(num_fg), 1))
        storage.put_scalar("roi_head/num_bg_samples", sum(num_bg) / max(len(num_bg), 1))
        return sampled

    def _match_image(self, proposals: Instances, targets: Instances):
        """One image's matching: ``(labels, matched_idxs, ious, is_matched)``, each ``[R]``."""
        num_proposals, has_gt = len(proposals), len(targets) > 0
        iou = pairwise_iou(targets.gt_boxes, proposals.proposal_boxes)  # [G, R]
        matched_idxs, match_labels = self.proposal_matcher(iou)
        background = self.num_classes
        if has_gt:
            ious = iou.gather(0, matched_idxs[None, :])[0]
            labels = targets.gt_classes[matched_idxs]
            labels[match_labels == 0] = background
            labels[match_labels == -1] = -1
        else:
            ious = iou.new_zeros(num_proposals)
            labels = torch.full_like(matched_idxs, background)
        is_matched = (match_labels == 1) & has_gt
        return labels, matched_idxs, ious, is_matched

    def _candidate_losses(self, features, proposals, matches) -> List[torch.Tensor]:
        """Every proposal's classification loss under the current model, per image ``[R_i]``."""
        candidates = []
        for proposals_i, (labels, _, ious, _) in zip(proposals, matches):
            c = Instances(proposals_i.image_size)
            c.proposal_boxes = proposals_i.proposal_boxes
            c.gt_classes = labels.clamp(min=0)  # ignored (-1) proposals are never sampled
            c.gt_ious = ious
            candidates.append(c)
        box_features = self.box_pooler(
            [features[f] for f in self.box_in_features], [c.proposal_boxes for c in candidates]
        )
        predictions = self.box_predictor(self.box_head(box_features))
        losses = self.box_predictor.roi_classification_losses(predictions, candidates)
        return list(losses.split([len(c) for c in candidates]))

    def _sample_image(self, proposals: Instances, targets: Instances, match, roi_losses):
        """One image of :meth:`label_and_sample_proposals`; returns (sampled, #foreground)."""
        labels, matched_idxs, ious, is_matched = match
        background, has_gt = self.num_classes, len(targets) > 0
        sampling_labels = labels
        if self.pos_labels_threshold > 0:
            low = is_matched & (ious <= self.pos_labels_threshold)
            sampling_labels = torch.where(low, torch.full_like(labels, background), labels)
        extra = {} if roi_losses is None else {"roi_losses": roi_losses}
        fg_idx, bg_idx = self.roi_sampler(
            sampling_labels,
            matched_idxs=matched_idxs,
            ious=ious,
            num_samples=self.batch_size_per_image,
            positive_fraction=self.positive_fraction,
            bg_label=background,
            **extra,
        )
        idx = torch.cat([fg_idx, bg_idx])

        sampled = proposals[idx]
        sampled.gt_classes = labels[idx]
        sampled.gt_ious = ious[idx]
        sampled.gt_is_matched = is_matched[idx]
        if has_gt:
            gt_idx = matched_idxs[idx]
            for name, value in targets.get_fields().items():
                if name.startswith("gt_") and not sampled.has(name):
                    sampled.set(name, value[gt_idx])
        return sampled, fg_idx.numel()
