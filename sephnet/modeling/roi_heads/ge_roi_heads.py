"""``SephGEROIHeads``: the log's "gev1" ROI heads (docs/components.md#ge-roi-heads PointPool,
docs/components.md#conventions).

Instead of pooling a 7x7 crop into a box head, gev1 runs RetinaNet-style towers densely on
every pyramid level and reads one feature vector per proposal at its centre; regression is
relative to a level-sized square around that centre, like a one-anchor dense detector
whose anchors are placed at the proposals.
"""
import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from sephnet.backend import (
    ROI_HEADS_REGISTRY,
    Boxes,
    Instances,
    ROIPooler,
    ShapeSpec,
    assign_boxes_to_levels,
    configurable,
)
from sephnet.modeling.dense_tower import SharedConvTower
from sephnet.modeling.roi_heads.predictor.build_predictor import build_box_predictor
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures
from sephnet.modeling.roi_heads.roi_heads import SephStandardROIHeads

__all__ = ["GETowers", "SephGEROIHeads", "point_pooler", "square_sides_from_config"]


class GETowers(nn.Module):
    """The cls and box towers of gev1, run on whole feature maps.

    ::

        level l: [N, C, H_l, W_l] +-> cls_tower (SharedConvTower, norms of l) -> [N, C, H_l, W_l]
                                  +-> box_tower (same layers, own weights)   -> [N, C, H_l, W_l]
        output: cat(cls, box) along channels -> [N, 2C, H_l, W_l]
    """

    def __init__(self, channels: int, *, num_convs: int, num_levels: int, **norm_args):
        """
        Args:
            channels: C of every level.
            num_convs: convs per tower (gev1: 4).
            num_levels: L.
            norm_args: ``norm``, ``norm_groups``, ``norm_eps`` of :class:`SharedConvTower`.
        """
        super().__init__()
        self.cls_tower = SharedConvTower(
            channels, num_convs=num_convs, num_levels=num_levels, **norm_args
        )
        self.box_tower = SharedConvTower(
            channels, num_convs=num_convs, num_levels=num_levels, **norm_args
        )
        # detectron2's RetinaNet initialisation (the original used TF-slim's Xavier)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            features: L maps ``[N, C, H_l, W_l]``.

        Returns:
            L maps ``[N, 2C, H_l, W_l]``: the cls tower's C channels, then the box tower's.
        """
        return [
            torch.cat([self.cls_tower(x, level), self.box_tower(x, level)], dim=1)
            for level, x in enumerate(features)
        ]


def point_pooler(
    strides: Sequence[int], canonical_box_size: float, canonical_level_index: int
) -> ROIPooler:
    """PointPool: the bilinear feature at each box's centre, on the box's level.

    An ``ROIAlignV2`` pooler with a 1x1 output and one sample per bin samples exactly the
    box centre (at ``centre / stride - 0.5`` in map coordinates, detectron2's half-pixel
    convention). Level of a box of side s = sqrt(area): ``floor(canonical_level_index +
    log2(s / canonical_box_size))`` clamped to the levels, as an index into ``strides``
    (gev1, 64 and 0: P3 < 128 px, P4 [128, 256), P5 [256, 512), P6 >= 512).

    Args:
        strides: the L level strides (powers of 2, increasing).
        canonical_box_size: the box side, in pixels, that maps to the canonical level.
        canonical_level_index: index into ``strides`` of the canonical level.

    Returns:
        An ROIPooler giving ``[R, C, 1, 1]``.
    """
    min_level = int(round(math.log2(strides[0])))
    return ROIPooler(
        output_size=1,
        scales=tuple(1.0 / s for s in strides),
        sampling_ratio=1,
        pooler_type="ROIAlignV2",
        canonical_box_size=canonical_box_size,
        canonical_level=min_level + canonical_level_index,
    )


def square_sides_from_config(cfg, num_levels: int) -> List[float]:
    """The square side of each ROI level: the first ``MODEL.ANCHOR_GENERATOR.SIZES`` entry of
    that level (one list for all levels, or one per level).

    Raises:
        ValueError: SIZES has neither 1 nor ``num_levels`` entries.
    """
    sizes = [list(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    if len(sizes) == 1:
        sizes = sizes * num_levels
    if len(sizes) != num_levels or not all(sizes):
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.SIZES={cfg.MODEL.ANCHOR_GENERATOR.SIZES}: SephGEROIHeads "
            f"needs one size list per MODEL.ROI_HEADS.IN_FEATURES entry ({num_levels}) or a "
            "single one; the first size of each is the side of that level's squares."
        )
    return [float(s[0]) for s in sizes]


@ROI_HEADS_REGISTRY.register()
class SephGEROIHeads(SephStandardROIHeads):
    """gev1: dense towers, PointPool at the proposal centre, square re-anchoring.

    ::

        training only: proposals --append gt, Matcher, ROI sampler--> labelled ROIs
                       (SephStandardROIHeads; labels come from the original proposals)
        features{L} --box_head (GETowers)--> L maps [N, 2C, H_l, W_l]
            --box_pooler (PointPool at the proposal centre, proposal's level)--> [R, 2C]
            --split--> cls_feat [R, C], box_feat [R, C]
            --box_predictor (no box head)--> logits [R, K+1], deltas [R, 4K]
        proposal box --> square of side SIZES[level] centred at the proposal centre;
            regression targets (train) and decoding (test) are relative to the square.

    The mask head, if any, is detectron2's on the original proposal boxes.

    Faithfulness notes: the original sampled the centre with TF's corner-aligned
    ``crop_and_resize``; here detectron2's half-pixel convention (``ROIAlignV2``) is used.
    The original built an unused box head; none is built here. Subclasses
    ``SephStandardROIHeads`` (two levels below detectron2's class) to reuse its labelling
    and sampler unchanged; only the box path differs (``_forward_box``).
    """

    @configurable
    def __init__(self, *, square_sides: Sequence[float], **kwargs):
        """
        Args:
            square_sides: the side in pixels of the squares of each level of
                ``box_in_features`` (gev1: 64, 128, 256, 512).
            kwargs: arguments of :class:`SephStandardROIHeads`; ``box_pooler`` is a
                :func:`point_pooler`, ``box_head`` a :class:`GETowers`, and
                ``box_predictor`` takes ``DecoupledFeatures`` of ``[R, C]`` vectors.

        Raises:
            ValueError: not one positive side per level.
        """
        super().__init__(**kwargs)
        if len(square_sides) != len(self.box_in_features) or min(square_sides) <= 0:
            raise ValueError(
                f"SephGEROIHeads: square_sides={list(square_sides)}; expected one positive "
                f"side per box_in_features entry {self.box_in_features}."
            )
        self.register_buffer(
            "square_sides", torch.tensor([float(s) for s in square_sides]), persistent=False
        )

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        channels = sorted({input_shape[f].channels for f in in_features})
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES={in_features} have different channel counts "
                f"{channels}; SephGEROIHeads shares its towers across levels."
            )
        node = cfg.MODEL.SEPH.GE_ROI_HEADS
        if not 0 <= node.CANONICAL_LEVEL < len(in_features):
            raise ValueError(
                f"MODEL.SEPH.GE_ROI_HEADS.CANONICAL_LEVEL={node.CANONICAL_LEVEL!r}; expected an "
                f"index into MODEL.ROI_HEADS.IN_FEATURES={in_features}."
            )
        c = channels[0]
        towers = GETowers(
            c,
            num_convs=node.NUM_CONVS,
            num_levels=len(in_features),
            norm=cfg.MODEL.ROI_BOX_HEAD.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
        )
        vector = ShapeSpec(channels=c)
        return {
            "box_in_features": in_features,
            "box_pooler": point_pooler(
                [input_shape[f].stride for f in in_features],
                node.CANONICAL_BOX_SIZE,
                node.CANONICAL_LEVEL,
            ),
            "box_head": towers,
            "box_predictor": build_box_predictor(cfg, {"cls": vector, "box": vector}),
            "square_sides": square_sides_from_config(cfg, len(in_features)),
        }

    def square_proposals(self, proposals: List[Instances]) -> List[Instances]:
        """Replace each proposal box by the square of its level centred at its centre.

        Args:
            proposals: N Instances with ``proposal_boxes`` (and any other fields).

        Returns:
            N Instances with the same fields, ``proposal_boxes`` float ``[R_i, 4]`` squares.
        """
        pooler = self.box_pooler
        boxes = [p.proposal_boxes for p in proposals]
        if len(self.box_in_features) == 1:
            levels = torch.zeros(sum(len(b) for b in boxes), dtype=torch.int64)
        else:
            levels = assign_boxes_to_levels(
                boxes,
                pooler.min_level,
                pooler.max_level,
                pooler.canonical_box_size,
                pooler.canonical_level,
            )
        half = self.square_sides[levels.to(self.square_sides.device)] / 2
        out, start = [], 0
        for p, b in zip(proposals, boxes):
            centres = b.get_centers()
            h = half[start : start + len(b)].to(centres)[:, None]
            start += len(b)
            squared = Instances(p.image_size, **p.get_fields())
            squared.proposal_boxes = Boxes(torch.cat([centres - h, centres + h], dim=1))
            out.append(squared)
        return out

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """
        Args:
            features: maps by name, ``[N, C, H_l, W_l]``.
            proposals: N Instances (training: sampled and labelled).

        Returns:
            Training: the predictor's losses. Test: N Instances of detections.
        """
        maps = self.box_head([features[f] for f in self.box_in_features])
        pooled = self.box_pooler(maps, [p.proposal_boxes for p in proposals]).flatten(1)
        cls_feat, box_feat = pooled.chunk(2, dim=1)
        predictions = self.box_predictor(DecoupledFeatures(cls_feat, box_feat))
        squares = self.square_proposals(proposals)
        if self.training:
            return self.box_predictor.losses(predictions, squares)
        pred_instances, _ = self.box_predictor.inference(predictions, squares)
        return pred_instances
