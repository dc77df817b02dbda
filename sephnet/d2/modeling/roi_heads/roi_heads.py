"""Second-stage ROI heads of R-CNN models: proposal labelling/sampling and per-region heads.

Shape letters: N images, Pi proposals of image i, Gi ground-truth objects of image i,
K foreground classes (label K is background, -1 ignored).

- :class:`ROIHeads`: base class; matches proposals to ground truth and samples the training
  regions.
- :class:`Res5ROIHeads`: "C4" models; one pooler + a ResNet res5 stage shared by the box
  predictor and the mask head.
- :class:`StandardROIHeads`: FPN/C5 models; each task has its own pooler and head.
"""
import inspect
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from sephnet.d2.config import configurable
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.backbone.resnet import BottleneckBlock, ResNet
from sephnet.d2.modeling.matcher import Matcher
from sephnet.d2.modeling.poolers import ROIPooler
from sephnet.d2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from sephnet.d2.modeling.roi_heads.box_head import build_box_head
from sephnet.d2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from sephnet.d2.modeling.roi_heads.mask_head import build_mask_head
from sephnet.d2.modeling.sampling import subsample_labels
from sephnet.d2.structures import Boxes, ImageList, Instances, pairwise_iou
from sephnet.d2.utils.events import get_event_storage
from sephnet.d2.modeling.feature_check import explain_missing_feature
from sephnet.d2.utils.registry import Registry

__all__ = [
    "ROI_HEADS_REGISTRY",
    "build_roi_heads",
    "select_foreground_proposals",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
]

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
ROI heads of a generalized R-CNN: given backbone features and per-image proposals they run
all per-region computation. Each entry is called as ``obj(cfg, input_shape)`` with the
backbone's ``{name: ShapeSpec}`` and returns an :class:`ROIHeads`.
"""

logger = logging.getLogger(__name__)

_KEYPOINTS_UNSUPPORTED = (
    "keypoint heads are not part of sephnet's portable core (MODEL.KEYPOINT_ON must be False); "
    "install detectron2 to use them"
)


def build_roi_heads(cfg, input_shape: Dict[str, ShapeSpec]) -> "ROIHeads":
    """Build the ROI heads named by ``cfg.MODEL.ROI_HEADS.NAME``.

    Raises:
        MissingFeatureError: ``MODEL.ROI_HEADS.IN_FEATURES`` names a feature the backbone
            does not output (a ``KeyError``).
    """
    heads = ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)
    try:
        return heads(cfg, input_shape)
    except KeyError as e:
        explain_missing_feature(e, "MODEL.ROI_HEADS.IN_FEATURES", cfg.MODEL.ROI_HEADS.IN_FEATURES,
                                input_shape)


def select_foreground_proposals(
    proposals: List[Instances], bg_label: int
) -> Tuple[List[Instances], List[torch.Tensor]]:
    """Keep the regions whose ``gt_classes`` is a foreground class (neither -1 nor ``bg_label``).

    Args:
        proposals: per image, Instances with an int64 ``gt_classes`` field ``[Pi]``.
        bg_label: the background label (K).

    Returns:
        per image, the foreground subset; and per image, the bool ``[Pi]`` selection mask.
    """
    if not isinstance(proposals, (list, tuple)) or not proposals:
        raise ValueError(f"expected a non-empty list of Instances, got {proposals!r}")
    if not isinstance(proposals[0], Instances) or not proposals[0].has("gt_classes"):
        raise ValueError("select_foreground_proposals needs Instances with a 'gt_classes' field")
    selected, masks = [], []
    for per_image in proposals:
        labels = per_image.gt_classes
        is_fg = (labels != -1) & (labels != bg_label)
        selected.append(per_image[is_fg.nonzero().squeeze(1)])
        masks.append(is_fg)
    return selected, masks


class ROIHeads(torch.nn.Module):
    """Base class of ROI heads; owns the training-time labelling and sampling of proposals.

    Subclasses implement :meth:`forward` (feature pooling and the per-task heads).
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: int,
        positive_fraction: float,
        proposal_matcher: Matcher,
        proposal_append_gt: bool = True,
    ):
        """
        Args:
            num_classes: K, the number of foreground classes.
            batch_size_per_image: regions sampled per image for training.
            positive_fraction: largest fraction of foreground among the sampled regions.
            proposal_matcher: assigns each proposal to a ground-truth box (or bg/ignore) from
                the ``[Gi, Pi]`` IoU matrix.
            proposal_append_gt: add the ground-truth boxes to the proposals before matching.
        """
        super().__init__()
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.num_classes = num_classes
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg):
        roi = cfg.MODEL.ROI_HEADS
        return {
            "batch_size_per_image": roi.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": roi.POSITIVE_FRACTION,
            "num_classes": roi.NUM_CLASSES,
            "proposal_append_gt": roi.PROPOSAL_APPEND_GT,
            "proposal_matcher": Matcher(
                roi.IOU_THRESHOLDS, roi.IOU_LABELS, allow_low_quality_matches=False
            ),
        }

    def _sample_proposals(
        self, matched_idxs: torch.Tensor, matched_labels: torch.Tensor, gt_classes: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Label the proposals of one image and sample the training subset.

        Args:
            matched_idxs: int64 ``[Pi]``, index of the matched gt in ``[0, Gi)``.
            matched_labels: int8 ``[Pi]``, matcher label: 1 fg, 0 bg, -1 ignore.
            gt_classes: int64 ``[Gi]`` classes of the ground truth.

        Returns:
            int64 ``[S]`` indices of the sampled proposals (foreground first) and int64 ``[S]``
            their labels in ``[0, K]``.
        """
        if gt_classes.numel() > 0:
            labels = gt_classes[matched_idxs]
            labels[matched_labels == 0] = self.num_classes
            labels[matched_labels == -1] = -1
        else:
            labels = torch.full_like(matched_idxs, self.num_classes)

        fg_idxs, bg_idxs = subsample_labels(
            labels, self.batch_size_per_image, self.positive_fraction, self.num_classes
        )
        sampled = torch.cat([fg_idxs, bg_idxs], dim=0)
        return sampled, labels[sampled]

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """Match proposals to ground truth and sample the regions used to train the heads.

        With ``proposal_append_gt`` the gt boxes are first added as proposals, which
        guarantees foreground samples early in training when the RPN is still poor.
        Logs ``roi_head/num_fg_samples`` and ``roi_head/num_bg_samples`` (means over images)
        into the EventStorage, which must exist.

        Args:
            proposals: per image, Instances with ``proposal_boxes`` (and
                ``objectness_logits``).
            targets: per image, Instances with ``gt_boxes``, ``gt_classes`` and optionally
                other ``gt_*`` fields (e.g. ``gt_masks``).

        Returns:
            per image, at most ``batch_size_per_image`` sampled proposals (foreground first)
            with ``gt_classes`` (int64 labels in ``[0, K]``) and, when the image has ground
            truth, every ``gt_*`` field of ``targets`` indexed by the matched gt (for
            background regions the matched gt is arbitrary).
        """
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)

        sampled_proposals = []
        num_fg, num_bg = [], []
        for props, gts in zip(proposals, targets):
            iou = pairwise_iou(gts.gt_boxes, props.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(iou)
            sampled_idxs, labels = self._sample_proposals(
                matched_idxs, matched_labels, gts.gt_classes
            )

            props = props[sampled_idxs]
            props.gt_classes = labels
            if len(gts) > 0:
                matched_gt = matched_idxs[sampled_idxs]
                for name, value in gts.get_fields().items():
                    if name.startswith("gt_") and not props.has(name):
                        props.set(name, value[matched_gt])
            # Without ground truth there is nothing to copy: such proposals only carry a
            # background gt_classes.

            bg = int((labels == self.num_classes).sum())
            num_bg.append(bg)
            num_fg.append(labels.numel() - bg)
            sampled_proposals.append(props)

        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", np.mean(num_fg))
        storage.put_scalar("roi_head/num_bg_samples", np.mean(num_bg))
        return sampled_proposals

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """
        Args:
            images: the batch (subclasses usually ignore it).
            features: backbone features by name, float ``[N, C, Hl, Wl]`` each.
            proposals: per image, Instances with ``proposal_boxes`` and
                ``objectness_logits``.
            targets: per image ground truth (``gt_boxes``, ``gt_classes``, optional
                ``gt_masks``); required in training only.

        Returns:
            per image predicted Instances at test time (training may return the sampled
            proposals or ``[]``), and a dict of losses (empty at test time).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """ROI heads of "C4" models: the res5 stage of a ResNet runs on each pooled region and
    its output feeds both the box predictor and the mask head.

    Topology::

        features[in_features[0]] -> pooler -> res5 -+-> mean over HxW -> box_predictor
                                                    +-> (fg regions) -> mask_head
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        pooler: ROIPooler,
        res5: nn.Module,
        box_predictor: nn.Module,
        mask_head: Optional[nn.Module] = None,
        **kwargs,
    ):
        """
        Args:
            in_features: the single backbone feature to pool from, as a one-element list.
            pooler: extracts region features from that feature map.
            res5: per-region network (a res5 stage); a list/tuple of modules is wrapped
                into ``nn.Sequential``.
            box_predictor: same interface as :class:`FastRCNNOutputLayers`.
            mask_head: optional mask head on the res5 features.
            kwargs: forwarded to :class:`ROIHeads`.
        """
        super().__init__(**kwargs)
        self.in_features = in_features
        self.pooler = pooler
        if isinstance(res5, (list, tuple)):
            res5 = nn.Sequential(*res5)
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg)
        in_features = ret["in_features"] = cfg.MODEL.ROI_HEADS.IN_FEATURES
        if cfg.MODEL.KEYPOINT_ON:
            raise NotImplementedError(_KEYPOINTS_UNSUPPORTED)
        if len(in_features) != 1:
            raise ValueError(
                f"Res5ROIHeads pools from exactly one feature map; got "
                f"MODEL.ROI_HEADS.IN_FEATURES={list(in_features)}"
            )
        box = cfg.MODEL.ROI_BOX_HEAD
        ret["pooler"] = ROIPooler(
            output_size=box.POOLER_RESOLUTION,
            scales=(1.0 / input_shape[in_features[0]].stride,),
            sampling_ratio=box.POOLER_SAMPLING_RATIO,
            pooler_type=box.POOLER_TYPE,
        )
        # Subclasses written for older detectron2 may override _build_res5_block as a plain
        # method; call it as a classmethod either way.
        build_res5 = cls._build_res5_block
        if not inspect.ismethod(build_res5):
            logger.warning("_build_res5_block is private; its behaviour may change.")
            build_res5 = classmethod(cls._build_res5_block).__get__(None, cls)
        ret["res5"], out_channels = build_res5(cfg)
        ret["box_predictor"] = FastRCNNOutputLayers(
            cfg, ShapeSpec(channels=out_channels, height=1, width=1)
        )
        if cfg.MODEL.MASK_ON:
            ret["mask_head"] = build_mask_head(
                cfg,
                ShapeSpec(
                    channels=out_channels, width=box.POOLER_RESOLUTION, height=box.POOLER_RESOLUTION
                ),
            )
        return ret

    @classmethod
    def _build_res5_block(cls, cfg) -> Tuple[nn.Module, int]:
        """Build the res5 stage (3 bottleneck blocks, first with stride 2) from the
        ``MODEL.RESNETS`` keys; returns it with its output channel count."""
        resnets = cfg.MODEL.RESNETS
        if resnets.DEFORM_ON_PER_STAGE[-1]:
            raise NotImplementedError(
                "deformable convolution in the res5 ROI head is not supported "
                "(MODEL.RESNETS.DEFORM_ON_PER_STAGE[-1] must be False)"
            )
        factor = 2 ** 3  # res5 is 8x wider than res2
        out_channels = resnets.RES2_OUT_CHANNELS * factor
        blocks = ResNet.make_stage(
            BottleneckBlock,
            3,
            stride_per_block=[2, 1, 1],
            in_channels=out_channels // 2,
            bottleneck_channels=resnets.NUM_GROUPS * resnets.WIDTH_PER_GROUP * factor,
            out_channels=out_channels,
            num_groups=resnets.NUM_GROUPS,
            norm=resnets.NORM,
            stride_in_1x1=resnets.STRIDE_IN_1X1,
        )
        return nn.Sequential(*blocks), out_channels

    def _shared_roi_transform(
        self, features: List[torch.Tensor], boxes: List[Boxes]
    ) -> torch.Tensor:
        """Pool regions from ``features`` and run res5: float ``[R, C5, S/2, S/2]``."""
        return self.res5(self.pooler(features, boxes))

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        """See :meth:`ROIHeads.forward`. Training returns ``([], losses)``."""
        del images
        if self.training:
            if not targets:
                raise ValueError("Res5ROIHeads needs 'targets' in training mode")
            proposals = self.label_and_sample_proposals(proposals, targets)
        del targets

        region_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [p.proposal_boxes for p in proposals]
        )
        predictions = self.box_predictor(region_features.mean(dim=[2, 3]))

        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}

        del features
        losses = self.box_predictor.losses(predictions, proposals)
        if self.mask_on:
            fg_proposals, fg_masks = select_foreground_proposals(proposals, self.num_classes)
            # res5 features are shared, so the mask head reuses the foreground rows.
            losses.update(self.mask_head(region_features[torch.cat(fg_masks, dim=0)], fg_proposals))
        return [], losses

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Run the non-box heads (mask) on given detections; test time only.

        Args:
            features: backbone features by name.
            instances: per image, detections with ``pred_boxes`` and ``pred_classes``.

        Returns:
            the same Instances, with ``pred_masks`` added when the mask head is on.
        """
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference only (call .eval())")
        if not (instances[0].has("pred_boxes") and instances[0].has("pred_classes")):
            raise ValueError("forward_with_given_boxes needs 'pred_boxes' and 'pred_classes'")
        if not self.mask_on:
            return instances
        region_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [inst.pred_boxes for inst in instances]
        )
        return self.mask_head(region_features, instances)


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """ROI heads where every task pools its own features and has its own head (FPN, C5).

    Topology::

        box:  features[box_in_features]  -> box_pooler  -> box_head -> box_predictor
        mask: features[mask_in_features] -> mask_pooler -> mask_head   (fg regions in training,
                                                                        detections at test time)

    Keypoint heads are outside the portable core: constructing with keypoint arguments or
    ``MODEL.KEYPOINT_ON`` raises ``NotImplementedError``.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_in_features: Optional[List[str]] = None,
        mask_pooler: Optional[ROIPooler] = None,
        mask_head: Optional[nn.Module] = None,
        keypoint_in_features: Optional[List[str]] = None,
        keypoint_pooler: Optional[ROIPooler] = None,
        keypoint_head: Optional[nn.Module] = None,
        train_on_pred_boxes: bool = False,
        **kwargs,
    ):
        """
        Args:
            box_in_features: backbone features the box pooler reads.
            box_pooler: region feature extractor of the box branch.
            box_head: per-region feature network (e.g. :class:`FastRCNNConvFCHead`).
            box_predictor: same interface as :class:`FastRCNNOutputLayers`.
            mask_in_features: backbone features of the mask branch; None disables masks.
            mask_pooler: region feature extractor of the mask branch; None hands the mask head
                the feature dict itself.
            mask_head: the mask head.
            keypoint_in_features, keypoint_pooler, keypoint_head: unsupported in the core;
                must be None.
            train_on_pred_boxes: train the mask head on the box branch's refined boxes
                instead of the proposals.
            kwargs: forwarded to :class:`ROIHeads`.
        """
        super().__init__(**kwargs)
        # ``in_features`` is kept as an alias for code written against older detectron2.
        self.in_features = self.box_in_features = box_in_features
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor

        self.mask_on = mask_in_features is not None
        if self.mask_on:
            self.mask_in_features = mask_in_features
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head

        if any(k is not None for k in (keypoint_in_features, keypoint_pooler, keypoint_head)):
            raise NotImplementedError(_KEYPOINTS_UNSUPPORTED)
        self.keypoint_on = False
        self.train_on_pred_boxes = train_on_pred_boxes

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg)
        ret["train_on_pred_boxes"] = cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES
        # A subclass may override an _init_*_head as a plain method (old style); it then
        # builds that part itself, so only classmethods are called here.
        for init_part in (cls._init_box_head, cls._init_mask_head, cls._init_keypoint_head):
            if inspect.ismethod(init_part):
                ret.update(init_part(cfg, input_shape))
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        box = cfg.MODEL.ROI_BOX_HEAD
        # All levels share one head, so they must have the same channel count.
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES={list(in_features)} have different channel counts "
                f"{[input_shape[f].channels for f in in_features]}; the box head needs one"
            )
        in_channels = channels.pop()
        box_pooler = ROIPooler(
            output_size=box.POOLER_RESOLUTION,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=box.POOLER_SAMPLING_RATIO,
            pooler_type=box.POOLER_TYPE,
        )
        resolution = box.POOLER_RESOLUTION
        box_head = build_box_head(
            cfg, ShapeSpec(channels=in_channels, height=resolution, width=resolution)
        )
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            "box_predictor": FastRCNNOutputLayers(cfg, box_head.output_shape),
        }

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        mask = cfg.MODEL.ROI_MASK_HEAD
        resolution = mask.POOLER_RESOLUTION
        ret = {"mask_in_features": in_features}
        if mask.POOLER_TYPE:
            ret["mask_pooler"] = ROIPooler(
                output_size=resolution,
                scales=tuple(1.0 / input_shape[f].stride for f in in_features),
                sampling_ratio=mask.POOLER_SAMPLING_RATIO,
                pooler_type=mask.POOLER_TYPE,
            )
            head_input = ShapeSpec(
                channels=input_shape[in_features[0]].channels, width=resolution, height=resolution
            )
        else:
            ret["mask_pooler"] = None
            head_input = {f: input_shape[f] for f in in_features}
        ret["mask_head"] = build_mask_head(cfg, head_input)
        return ret

    @classmethod
    def _init_keypoint_head(cls, cfg, input_shape):
        if cfg.MODEL.KEYPOINT_ON:
            raise NotImplementedError(_KEYPOINTS_UNSUPPORTED)
        return {}

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """See :meth:`ROIHeads.forward`. Training returns the sampled proposals and the losses
        ``loss_cls``, ``loss_box_reg`` (+ ``loss_mask``)."""
        del images
        if self.training:
            if not targets:
                raise ValueError("ROI heads in training mode need 'targets'")
            proposals = self.label_and_sample_proposals(proposals, targets)
            del targets
            # _forward_box may replace proposal_boxes (train_on_pred_boxes), so it runs first.
            losses = self._forward_box(features, proposals)
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses

        pred_instances = self._forward_box(features, proposals)
        # Masks are predicted only for the final detections.
        return self.forward_with_given_boxes(features, pred_instances), {}

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Run the non-box heads on given detections (test time, also used for TTA).

        Args:
            features: backbone features by name.
            instances: per image, detections with ``pred_boxes`` and ``pred_classes``.

        Returns:
            the same Instances with ``pred_masks`` added when the mask head is on.
        """
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference only (call .eval())")
        if not (instances[0].has("pred_boxes") and instances[0].has("pred_classes")):
            raise ValueError("forward_with_given_boxes needs 'pred_boxes' and 'pred_classes'")
        instances = self._forward_mask(features, instances)
        return self._forward_keypoint(features, instances)

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """Box branch.

        Args:
            features: backbone features by name.
            proposals: per image; in training the sampled proposals with gt fields.

        Returns:
            training: dict of box losses (and, with ``train_on_pred_boxes``, the proposals'
            ``proposal_boxes`` replaced in place by the predicted boxes of their gt class);
            inference: per image predicted Instances.
        """
        level_features = [features[f] for f in self.box_in_features]
        region_features = self.box_pooler(level_features, [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(region_features))
        del region_features

        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return pred_instances

        losses = self.box_predictor.losses(predictions, proposals)
        if self.train_on_pred_boxes:
            with torch.no_grad():
                refined = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for props, boxes in zip(proposals, refined):
                    props.proposal_boxes = Boxes(boxes)
        return losses

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Mask branch.

        Args:
            features: backbone features by name.
            instances: training: the sampled proposals (only foreground ones are used);
                inference: detections with ``pred_boxes``/``pred_classes``.

        Returns:
            training: ``{"loss_mask": ...}`` (empty dict when masks are off); inference:
            ``instances`` with ``pred_masks``.
        """
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)

        if self.mask_pooler is None:
            mask_input = {f: features[f] for f in self.mask_in_features}
        else:
            # training: the sampled foreground proposals; inference: the detections
            boxes = [i.proposal_boxes if self.training else i.pred_boxes for i in instances]
            mask_input = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        return self.mask_head(mask_input, instances)

    def _forward_keypoint(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Keypoint branch; always off in the core, so it is a pass-through."""
        return {} if self.training else instances
