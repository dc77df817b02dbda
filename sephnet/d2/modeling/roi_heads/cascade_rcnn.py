"""Cascade R-CNN ROI heads: a sequence of box heads, each refining the previous stage's boxes
and trained against ground truth with a stricter IoU threshold.

Shape letters: N images, Ri regions of image i, K foreground classes.
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import Function

from sephnet.d2.config import configurable
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.box_regression import Box2BoxTransform
from sephnet.d2.modeling.matcher import Matcher
from sephnet.d2.modeling.poolers import ROIPooler
from sephnet.d2.modeling.roi_heads.box_head import build_box_head
from sephnet.d2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from sephnet.d2.modeling.roi_heads.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from sephnet.d2.structures import Boxes, Instances, pairwise_iou
from sephnet.d2.utils.events import get_event_storage

__all__ = ["CascadeROIHeads"]


class _ScaleGradient(Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` backward."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * ctx.scale, None


@ROI_HEADS_REGISTRY.register()
class CascadeROIHeads(StandardROIHeads):
    """Cascade R-CNN (Cai & Vasconcelos) on top of :class:`StandardROIHeads`.

    Topology (S stages; one pooler shared by all stages)::

        proposals -> pool -> box_head[0] -> box_predictor[0] -> boxes_0
        boxes_0   -> pool -> box_head[1] -> box_predictor[1] -> boxes_1
        ...
        test time: scores = mean_s softmax(logits_s), boxes = boxes_{S-1}

    ``box_head`` and ``box_predictor`` are ``nn.ModuleList``s indexed by stage. In training,
    stage s > 0 re-matches its input boxes to the ground truth with ``proposal_matchers[s]``;
    the losses of stage s carry the suffix ``_stage{s}``. The mask head (if any) is trained on
    the first stage's sampled proposals and run on the final detections.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_heads: List[nn.Module],
        box_predictors: List[nn.Module],
        proposal_matchers: List[Matcher],
        **kwargs,
    ):
        """
        Args:
            box_in_features: backbone features the box pooler reads.
            box_pooler: region feature extractor shared by all stages.
            box_heads: one box head per stage.
            box_predictors: one predictor per stage (class-agnostic regression).
            proposal_matchers: one matcher per stage; the first labels the RPN proposals,
                the others label the boxes predicted by the previous stage.
            kwargs: forwarded to :class:`StandardROIHeads` (must not contain
                ``proposal_matcher``).
        """
        if "proposal_matcher" in kwargs:
            raise TypeError(
                "CascadeROIHeads takes one matcher per stage via 'proposal_matchers=', "
                "not 'proposal_matcher='"
            )
        num_stages = len(box_heads)
        if len(box_predictors) != num_stages or len(proposal_matchers) != num_stages:
            raise ValueError(
                f"CascadeROIHeads needs one box head, predictor and matcher per stage; got "
                f"{num_stages} heads, {len(box_predictors)} predictors and "
                f"{len(proposal_matchers)} matchers"
            )
        # The base class samples the first stage with the first matcher.
        kwargs["proposal_matcher"] = proposal_matchers[0]
        self.num_cascade_stages = num_stages
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            **kwargs,
        )
        self.proposal_matchers = proposal_matchers

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.pop("proposal_matcher")
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        box = cfg.MODEL.ROI_BOX_HEAD
        cascade = cfg.MODEL.ROI_BOX_CASCADE_HEAD
        ious, reg_weights = cascade.IOUS, cascade.BBOX_REG_WEIGHTS
        if len(ious) != len(reg_weights):
            raise ValueError(
                f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS ({len(ious)} stages) and .BBOX_REG_WEIGHTS "
                f"({len(reg_weights)} stages) must have the same length"
            )
        if not box.CLS_AGNOSTIC_BBOX_REG:
            raise ValueError(
                "CascadeROIHeads only supports class-agnostic box regression: set "
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG=True"
            )
        if ious[0] != cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]:
            raise ValueError(
                f"the first cascade IoU (MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0]={ious[0]}) must equal "
                f"MODEL.ROI_HEADS.IOU_THRESHOLDS[0]={cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]}"
            )
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES={list(in_features)} have different channel counts "
                f"{[input_shape[f].channels for f in in_features]}; the box heads need one"
            )
        pooled = ShapeSpec(
            channels=channels.pop(), width=box.POOLER_RESOLUTION, height=box.POOLER_RESOLUTION
        )
        box_pooler = ROIPooler(
            output_size=box.POOLER_RESOLUTION,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=box.POOLER_SAMPLING_RATIO,
            pooler_type=box.POOLER_TYPE,
        )

        box_heads, box_predictors, matchers = [], [], []
        for iou, weights in zip(ious, reg_weights):
            head = build_box_head(cfg, pooled)
            box_heads.append(head)
            box_predictors.append(
                FastRCNNOutputLayers(
                    cfg, head.output_shape, box2box_transform=Box2BoxTransform(weights=weights)
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

    def forward(
        self,
        images,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        """See :meth:`ROIHeads.forward`. Training returns the first stage's sampled proposals
        and the per-stage losses ``loss_cls_stage{s}``, ``loss_box_reg_stage{s}`` (+
        ``loss_mask``)."""
        del images
        if self.training:
            if not targets:
                raise ValueError("ROI heads in training mode need 'targets'")
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals, targets)
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses

        pred_instances = self._forward_box(features, proposals)
        return self.forward_with_given_boxes(features, pred_instances), {}

    def _forward_box(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        """Run all stages.

        Args:
            features: backbone features by name.
            proposals: per image; in training the sampled, labelled proposals.
            targets: per image ground truth; needed in training to label later stages.

        Returns:
            training: dict of per-stage losses; inference: per image predicted Instances.
        """
        level_features = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        # (predictor, its (logits, deltas), the proposals it ran on) per stage
        stage_outputs: List[Tuple[nn.Module, Tuple[torch.Tensor, ...], List[Instances]]] = []
        prev_boxes = None
        for stage in range(self.num_cascade_stages):
            if stage > 0:
                proposals = self._create_proposals_from_boxes(prev_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, stage, targets)
            predictions = self._run_stage(level_features, proposals, stage)
            predictor = self.box_predictor[stage]
            prev_boxes = predictor.predict_boxes(predictions, proposals)
            stage_outputs.append((predictor, predictions, proposals))

        if self.training:
            storage = get_event_storage()
            losses = {}
            for stage, (predictor, predictions, stage_proposals) in enumerate(stage_outputs):
                with storage.name_scope(f"stage{stage}"):
                    stage_losses = predictor.losses(predictions, stage_proposals)
                losses.update({f"{name}_stage{stage}": v for name, v in stage_losses.items()})
            return losses

        # Average the class probabilities of all stages; take the boxes of the last one.
        per_stage_probs = [p.predict_probs(pred, props) for p, pred, props in stage_outputs]
        scores = [
            sum(list(image_probs)) * (1.0 / self.num_cascade_stages)
            for image_probs in zip(*per_stage_probs)
        ]
        last_predictor, last_predictions, last_proposals = stage_outputs[-1]
        boxes = last_predictor.predict_boxes(last_predictions, last_proposals)
        pred_instances, _ = fast_rcnn_inference(
            boxes,
            scores,
            image_sizes,
            last_predictor.test_score_thresh,
            last_predictor.test_nms_thresh,
            last_predictor.test_topk_per_image,
        )
        return pred_instances

    @torch.no_grad()
    def _match_and_label_boxes(
        self, proposals: List[Instances], stage: int, targets: List[Instances]
    ) -> List[Instances]:
        """Label a later stage's input boxes with that stage's matcher (no sampling).

        Logs ``stage{s}/roi_head/num_fg_samples`` and ``num_bg_samples`` (needs EventStorage).

        Args:
            proposals: per image, Instances with ``proposal_boxes``.
            stage: the stage index s > 0.
            targets: per image ground truth with ``gt_boxes`` and ``gt_classes``.

        Returns:
            the same Instances with ``gt_classes`` (int64 in ``[0, K]``) and ``gt_boxes``
            (zeros for images without ground truth).
        """
        num_fg, num_bg = [], []
        for props, gts in zip(proposals, targets):
            iou = pairwise_iou(gts.gt_boxes, props.proposal_boxes)
            matched_idxs, labels = self.proposal_matchers[stage](iou)
            if len(gts) > 0:
                gt_classes = gts.gt_classes[matched_idxs]
                gt_classes[labels == 0] = self.num_classes
                gt_boxes = gts.gt_boxes[matched_idxs]
            else:
                gt_classes = torch.full_like(matched_idxs, self.num_classes)
                gt_boxes = Boxes(gts.gt_boxes.tensor.new_zeros((len(props), 4)))
            props.gt_classes = gt_classes
            props.gt_boxes = gt_boxes

            fg = int((labels == 1).sum())
            num_fg.append(fg)
            num_bg.append(labels.numel() - fg)

        storage = get_event_storage()
        storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
        storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", sum(num_bg) / len(num_bg))
        return proposals

    def _run_stage(
        self, features: List[torch.Tensor], proposals: List[Instances], stage: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pool, run stage ``stage``'s head and predictor.

        Args:
            features: the pooled levels' feature maps, float ``[N, C, Hl, Wl]`` each.
            proposals: per image, Instances with ``proposal_boxes``.
            stage: stage index.

        Returns:
            the stage predictor's ``(logits [R, K+1], deltas [R, 4])``.
        """
        region_features = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        # Summing the stage losses while scaling the gradient reaching the shared features by
        # 1/S matches the paper's averaged losses with up-scaled head gradients.
        region_features = _ScaleGradient.apply(region_features, 1.0 / self.num_cascade_stages)
        return self.box_predictor[stage](self.box_head[stage](region_features))

    def _create_proposals_from_boxes(
        self, boxes: List[torch.Tensor], image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Wrap a stage's predicted boxes as the next stage's proposals.

        Boxes are detached and clipped to the image. Empty boxes are dropped in training only:
        at test time every stage must score the same regions so their scores can be averaged.

        Args:
            boxes: per image, float ``[Ri, 4]``.
            image_sizes: per image ``(height, width)``.

        Returns:
            per image, Instances with ``proposal_boxes``.
        """
        proposals = []
        for boxes_i, size in zip(boxes, image_sizes):
            wrapped = Boxes(boxes_i.detach())
            wrapped.clip(size)
            if self.training:
                wrapped = wrapped[wrapped.nonempty()]
            props = Instances(size)
            props.proposal_boxes = wrapped
            proposals.append(props)
        return proposals
