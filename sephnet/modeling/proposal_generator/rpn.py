"""``SephRPN``: detectron2's RPN whose anchors can be labelled by an ATSS-style matcher.

Part A item 6: the log's ATSS matchers label RPN anchors (B §2.8). Everything else
(head, anchors, per-image sampling, losses, proposal selection) is the backend's ``RPN``.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch

from sephnet.backend import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN,
    Boxes,
    CfgNode,
    Instances,
    ShapeSpec,
    configurable,
)
from sephnet.modeling.matchers import build_anchor_matcher

__all__ = ["SephRPN"]

# (gt_boxes (G, 4), anchors (N, 4), L level sizes) -> (int64 (N,), int8 (N,)); see
# sephnet.modeling.matchers.base.
BoxMatcher = Callable[[Boxes, Boxes, List[int]], Tuple[torch.Tensor, torch.Tensor]]


@PROPOSAL_GENERATOR_REGISTRY.register()
class SephRPN(RPN):
    """``RPN`` with an optional box-level anchor matcher (``MODEL.SEPH.RPN.MATCHER.NAME``).

    Without ``box_matcher`` it is exactly the backend's ``RPN`` (same parameters, state_dict
    keys and losses). With one, only anchor labelling changes::

        anchors (L levels) --cat--> (N, 4) --box_matcher(gt_boxes, anchors, [n_1..n_L])-->
            labels int8 (N,) --[boundary ignore]--> per-image subsample_labels --> losses

    The matcher sees boxes and level sizes rather than an IoU matrix, because the ATSS family
    needs anchor centres and levels. Sampling stays detectron2's (per image,
    ``MODEL.RPN.BATCH_SIZE_PER_IMAGE`` and ``POSITIVE_FRACTION``; Part A item 1).
    """

    @configurable
    def __init__(self, *, box_matcher: Optional[BoxMatcher] = None, **kwargs):
        """
        Args:
            box_matcher: labels anchors from boxes (contract in
                :mod:`sephnet.modeling.matchers.base`); when given, the ``anchor_matcher``
                (detectron2's IoU ``Matcher``) is not used for training labels.
            kwargs: the keyword arguments of the backend's ``RPN``.
        """
        super().__init__(**kwargs)
        self.box_matcher = box_matcher

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        if cfg.MODEL.SEPH.RPN.MATCHER.NAME:
            per_level = list(ret["anchor_generator"].num_anchors)
            if len(set(per_level)) != 1:
                raise ValueError(
                    f"MODEL.SEPH.RPN.MATCHER.NAME={cfg.MODEL.SEPH.RPN.MATCHER.NAME!r} needs the "
                    f"same number of anchors per location on every level, got {per_level} from "
                    "MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS."
                )
            ret["box_matcher"] = build_anchor_matcher(cfg, per_level[0])
        return ret

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Label anchors with ``box_matcher`` (if set) and sample them as the ``RPN`` does.

        Args:
            anchors: L ``Boxes`` (Hi*Wi*A, 4), shared by the N images.
            gt_instances: N ``Instances`` with ``gt_boxes``.

        Returns:
            N int8 label vectors (R,) in {-1, 0, 1} after sampling, and N (R, 4) matched gt
            boxes (meaningful for positives; zeros for an image without gt).
        """
        if self.box_matcher is None:
            return super().label_and_sample_anchors(anchors, gt_instances)
        level_sizes = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        labels_per_image, boxes_per_image = [], []
        for instances in gt_instances:
            gt_boxes = instances.gt_boxes
            matched_idxs, labels = self.box_matcher(gt_boxes, anchors, level_sizes)
            labels = labels.to(device=gt_boxes.device)
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            labels_per_image.append(self._subsample_labels(labels))
            if len(gt_boxes) == 0:
                boxes_per_image.append(torch.zeros_like(anchors.tensor))
            else:
                boxes_per_image.append(gt_boxes.tensor[matched_idxs])
        return labels_per_image, boxes_per_image
