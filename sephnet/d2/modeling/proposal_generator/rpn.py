"""Region Proposal Network (Faster R-CNN) with detectron2 v0.6's module layout and numerics.

Shape letters: N = #images, L = #feature levels used by the RPN, A = #cell anchors per position
(equal on every level), Hi/Wi = size of level i, B = box dimension (4), R = sum_i Hi*Wi*A = #anchors
of one image over all levels.

Data flow of :class:`RPN`::

    features[in_features] ──► rpn_head ──► logits (N, A, Hi, Wi), deltas (N, A*B, Hi, Wi)
           │                                   │ to (N, Hi*Wi*A) and (N, Hi*Wi*A, B)
           └──► anchor_generator ──► anchors ──┤
                                               ├─ training: label_and_sample_anchors ──► losses
                                               └─ always: decode + find_top_rpn_proposals
"""
from numbers import Number
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from sephnet.d2.config import configurable
from sephnet.d2.layers import Conv2d, ShapeSpec, cat
from sephnet.d2.modeling.anchor_generator import build_anchor_generator
from sephnet.d2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from sephnet.d2.modeling.matcher import Matcher
from sephnet.d2.modeling.sampling import subsample_labels
from sephnet.d2.structures import Boxes, ImageList, Instances, pairwise_iou
from sephnet.d2.utils.events import get_event_storage
from sephnet.d2.utils.registry import Registry

from .build import PROPOSAL_GENERATOR_REGISTRY
from .proposal_utils import find_top_rpn_proposals

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = """
RPN heads: modules that predict, for every anchor of every level, an objectness logit and box
regression deltas. A registered class is called as ``obj(cfg, input_shape)`` with
``input_shape`` a list[ShapeSpec] (one per level) and must return an ``nn.Module``.
"""

_SUPPORTED_BOX_REG_LOSSES = ("smooth_l1", "giou", "diou", "ciou")


def build_rpn_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Build the RPN head named by ``cfg.MODEL.RPN.HEAD_NAME``."""
    return RPN_HEAD_REGISTRY.get(cfg.MODEL.RPN.HEAD_NAME)(cfg, input_shape)


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """The Faster R-CNN RPN head, shared by all levels.

    Topology (per level)::

        x (N, C, Hi, Wi) ─► conv: 3x3 conv(s)+ReLU ─┬─► objectness_logits 1x1 ─► (N, A, Hi, Wi)
                                                    └─► anchor_deltas 1x1 ─► (N, A*B, Hi, Wi)

    With one entry in ``conv_dims`` the hidden conv is the attribute ``conv`` itself; with several
    it is an ``nn.Sequential`` whose children are ``conv0``, ``conv1``, ... (checkpoint layout of
    detectron2). Every conv is initialised with weights ~ N(0, 0.01) and zero bias.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        box_dim: int = 4,
        conv_dims: List[int] = (-1,),
    ):
        """
        Args:
            in_channels: channels C of every input level.
            num_anchors: cell anchors A per spatial position.
            box_dim: numbers regressed per anchor (4 for axis-aligned boxes).
            conv_dims: output channels of each hidden 3x3 conv; -1 means "same as its input".

        Raises:
            ValueError: if a resolved hidden channel count is not positive.
        """
        super().__init__()
        channels = in_channels
        if len(conv_dims) == 1:
            out = channels if conv_dims[0] == -1 else conv_dims[0]
            self.conv = self._get_rpn_conv(channels, out)
            channels = out
        else:
            self.conv = nn.Sequential()
            for index, dim in enumerate(conv_dims):
                out = channels if dim == -1 else dim
                if out <= 0:
                    raise ValueError(
                        f"Conv output channels should be greater than 0. Got {out} for "
                        f"conv_dims[{index}] (conv_dims={list(conv_dims)})"
                    )
                self.conv.add_module(f"conv{index}", self._get_rpn_conv(channels, out))
                channels = out
        self.objectness_logits = nn.Conv2d(channels, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * box_dim, kernel_size=1, stride=1)
        # Initialise in module-registration order so random draws match detectron2.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0)

    @staticmethod
    def _get_rpn_conv(in_channels: int, out_channels: int) -> nn.Module:
        return Conv2d(
            in_channels, out_channels, kernel_size=3, stride=1, padding=1, activation=nn.ReLU()
        )

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"Each level must have the same channel! Got channels {channels}")
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = set(anchor_generator.num_anchors)
        if len(num_anchors) != 1:
            raise ValueError(
                "Each level must have the same number of anchors per spatial position, got "
                f"{anchor_generator.num_anchors} (see MODEL.ANCHOR_GENERATOR.SIZES/ASPECT_RATIOS)"
            )
        return {
            "in_channels": channels.pop(),
            "num_anchors": num_anchors.pop(),
            "box_dim": anchor_generator.box_dim,
            "conv_dims": cfg.MODEL.RPN.CONV_DIMS,
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: L tensors (N, C, Hi, Wi).

        Returns:
            L objectness logit maps (N, A, Hi, Wi) and L delta maps (N, A*B, Hi, Wi).
        """
        logits, deltas = [], []
        for x in features:
            hidden = self.conv(x)
            logits.append(self.objectness_logits(hidden))
            deltas.append(self.anchor_deltas(hidden))
        return logits, deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region Proposal Network: anchors + a head + anchor labelling/losses + proposal selection.

    ``forward`` returns ``(proposals, losses)``; losses are computed in training mode only and
    need an active ``EventStorage`` (anchor statistics are logged to it).
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
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_topk: Tuple[float, float],
        post_nms_topk: Tuple[float, float],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ):
        """
        Args:
            in_features: names of the backbone features the RPN runs on.
            head: maps the list of L features to (objectness logits, anchor deltas) per level.
            anchor_generator: produces L ``Boxes`` of anchors (Hi*Wi*A, B); exposes ``box_dim``.
            anchor_matcher: labels anchors against ground truth from an IoU matrix.
            box2box_transform: anchor <-> box delta parameterisation.
            batch_size_per_image: anchors sampled per image for the losses.
            positive_fraction: target fraction of positives among sampled anchors.
            pre_nms_topk: (train, test) candidates kept per level before NMS.
            post_nms_topk: (train, test) proposals kept per image after NMS.
            nms_thresh: IoU threshold of the proposal NMS.
            min_box_size: proposals with a side <= this (input pixels) are removed.
            anchor_boundary_thresh: if >= 0, anchors extending more than this many pixels beyond
                the image are ignored in training (legacy Detectron behaviour; -1 disables it).
            loss_weight: one weight for both losses, or a dict with keys ``loss_rpn_cls`` and
                ``loss_rpn_loc`` (a missing key means weight 1).
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            smooth_l1_beta: beta of the smooth-L1 loss (0 = L1).

        Raises:
            ValueError: for an unsupported ``box_reg_loss_type``.
        """
        super().__init__()
        if box_reg_loss_type not in _SUPPORTED_BOX_REG_LOSSES:
            raise ValueError(
                f"Invalid dense box regression loss type '{box_reg_loss_type}' "
                f"(MODEL.RPN.BBOX_REG_LOSS_TYPE); expected one of {_SUPPORTED_BOX_REG_LOSSES}"
            )
        self.in_features = in_features
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        # Indexed by self.training.
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        if isinstance(loss_weight, Number):
            loss_weight = {"loss_rpn_cls": loss_weight, "loss_rpn_loc": loss_weight}
        self.loss_weight = loss_weight
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        rpn = cfg.MODEL.RPN
        missing = [f for f in rpn.IN_FEATURES if f not in input_shape]
        if missing:
            raise KeyError(
                f"MODEL.RPN.IN_FEATURES names {missing}, which the backbone does not produce; "
                f"available features: {sorted(input_shape)}"
            )
        level_shapes = [input_shape[f] for f in rpn.IN_FEATURES]
        return {
            "in_features": rpn.IN_FEATURES,
            "head": build_rpn_head(cfg, level_shapes),
            "anchor_generator": build_anchor_generator(cfg, level_shapes),
            "anchor_matcher": Matcher(
                rpn.IOU_THRESHOLDS, rpn.IOU_LABELS, allow_low_quality_matches=True
            ),
            "box2box_transform": Box2BoxTransform(weights=rpn.BBOX_REG_WEIGHTS),
            "batch_size_per_image": rpn.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": rpn.POSITIVE_FRACTION,
            "pre_nms_topk": (rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            "nms_thresh": rpn.NMS_THRESH,
            "min_box_size": cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            "anchor_boundary_thresh": rpn.BOUNDARY_THRESH,
            "loss_weight": {
                "loss_rpn_cls": rpn.LOSS_WEIGHT,
                "loss_rpn_loc": rpn.BBOX_REG_LOSS_WEIGHT * rpn.LOSS_WEIGHT,
            },
            "box_reg_loss_type": rpn.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": rpn.SMOOTH_L1_BETA,
        }

    def _subsample_labels(self, label: torch.Tensor) -> torch.Tensor:
        """Sample at most ``batch_size_per_image`` anchors and mark all others as ignored.

        Args:
            label: (R,) int labels in {-1, 0, 1}; overwritten in place.

        Returns:
            ``label`` itself: 1 for sampled positives, 0 for sampled negatives, -1 elsewhere.
        """
        pos_idx, neg_idx = subsample_labels(
            label, self.batch_size_per_image, self.positive_fraction, 0
        )
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Match every anchor to ground truth and sample the anchors used by the losses.

        Args:
            anchors: L ``Boxes`` (Hi*Wi*A, 4), shared by all images.
            gt_instances: N ``Instances`` with ``gt_boxes`` and the image size.

        Returns:
            N label vectors (R,) in {-1 ignore, 0 negative, 1 positive} (the matcher's int8
            labels after sampling), and N (R, 4) tensors holding each anchor's matched gt box
            (meaningful for positives only; zeros when the image has no ground truth).
        """
        all_anchors = Boxes.cat(anchors)
        labels_per_image, matched_boxes_per_image = [], []
        for instances in gt_instances:
            gt_boxes = instances.gt_boxes
            iou = pairwise_iou(gt_boxes, all_anchors)
            matched_idxs, labels = self.anchor_matcher(iou)
            labels = labels.to(device=gt_boxes.device)
            del iou
            if self.anchor_boundary_thresh >= 0:
                inside = all_anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            labels = self._subsample_labels(labels)
            if len(gt_boxes) == 0:
                matched = torch.zeros_like(all_anchors.tensor)
            else:
                matched = gt_boxes[matched_idxs].tensor
            labels_per_image.append(labels)
            matched_boxes_per_image.append(matched)
        return labels_per_image, matched_boxes_per_image

    def losses(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """RPN objectness and localisation losses.

        Both are sums over sampled anchors (all sampled anchors for ``loss_rpn_cls``, positives
        for ``loss_rpn_loc``) divided by ``batch_size_per_image * N``, then multiplied by
        ``loss_weight``. Logs ``rpn/num_pos_anchors`` and ``rpn/num_neg_anchors`` (per image) to
        the current ``EventStorage``.

        Args:
            anchors: L ``Boxes`` (Hi*Wi*A, 4).
            pred_objectness_logits: L tensors (N, Hi*Wi*A).
            gt_labels: N tensors (R,) from :meth:`label_and_sample_anchors`.
            pred_anchor_deltas: L tensors (N, Hi*Wi*A, 4).
            gt_boxes: N tensors (R, 4) from :meth:`label_and_sample_anchors`.

        Returns:
            {"loss_rpn_cls": scalar, "loss_rpn_loc": scalar}.
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)
        positive = labels == 1
        storage = get_event_storage()
        storage.put_scalar("rpn/num_pos_anchors", positive.sum().item() / num_images)
        storage.put_scalar("rpn/num_neg_anchors", (labels == 0).sum().item() / num_images)

        loc_loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            positive,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        sampled = labels >= 0
        cls_loss = F.binary_cross_entropy_with_logits(
            cat(pred_objectness_logits, dim=1)[sampled],
            labels[sampled].to(torch.float32),
            reduction="sum",
        )
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": cls_loss / normalizer, "loss_rpn_loc": loc_loss / normalizer}
        return {name: value * self.loss_weight.get(name, 1.0) for name, value in losses.items()}

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """
        Args:
            images: the N (padded) input images; only ``image_sizes`` is used.
            features: backbone outputs by name, each (N, C, H, W).
            gt_instances: N ``Instances`` with ``gt_boxes``; required in training.

        Returns:
            N ``Instances`` with ``proposal_boxes`` and ``objectness_logits`` (descending), and a
            loss dict (empty at test time).

        Raises:
            ValueError: in training mode without ``gt_instances``.
        """
        level_features = [features[name] for name in self.in_features]
        anchors = self.anchor_generator(level_features)
        logits, deltas = self.rpn_head(level_features)
        box_dim = self.anchor_generator.box_dim
        # Anchor order within a level is (y, x, a), matching the anchor generator's layout.
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [
            x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1])
            .permute(0, 3, 4, 1, 2)
            .flatten(1, -2)
            for x in deltas
        ]

        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN in training mode needs gt_instances.")
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)
        proposals = self.predict_proposals(anchors, logits, deltas, images.image_sizes)
        return proposals, losses

    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """Decode the deltas and select proposals with :func:`find_top_rpn_proposals`.

        Runs without gradient: proposals are treated as constants by the ROI heads.

        Returns:
            N ``Instances`` with ``proposal_boxes`` and ``objectness_logits``.
        """
        with torch.no_grad():
            boxes = self._decode_proposals(anchors, pred_anchor_deltas)
            return find_top_rpn_proposals(
                boxes,
                pred_objectness_logits,
                image_sizes,
                self.nms_thresh,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.min_box_size,
                self.training,
            )

    def _decode_proposals(
        self, anchors: Sequence[Boxes], pred_anchor_deltas: Sequence[torch.Tensor]
    ) -> List[torch.Tensor]:
        """Apply per-anchor deltas (N, Hi*Wi*A, B) to the anchors (Hi*Wi*A, B) of each level.

        Returns:
            L tensors (N, Hi*Wi*A, B) of absolute boxes.
        """
        num_images = pred_anchor_deltas[0].shape[0]
        decoded = []
        for anchors_l, deltas_l in zip(anchors, pred_anchor_deltas):
            box_dim = anchors_l.tensor.size(1)
            flat_anchors = (
                anchors_l.tensor.unsqueeze(0).expand(num_images, -1, -1).reshape(-1, box_dim)
            )
            boxes = self.box2box_transform.apply_deltas(deltas_l.reshape(-1, box_dim), flat_anchors)
            decoded.append(boxes.view(num_images, -1, box_dim))
        return decoded
