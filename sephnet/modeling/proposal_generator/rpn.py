"""``SephRPN``: detectron2's RPN whose anchors can be labelled by an ATSS-style matcher.

The log's ATSS matchers label RPN anchors (docs/components.md#anchors-and-rpn). Optionally
(docs/components.md#conventions) anchors are sampled over the whole batch as in the original,
and test-time proposals are selected with soft-NMS (docs/test_time.md). Everything else (head,
anchors, losses, training-time proposal selection) is the backend's ``RPN``.
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
    find_top_rpn_proposals,
    pairwise_iou,
    subsample_labels,
)
from sephnet.modeling.matchers import build_anchor_matcher
from sephnet.modeling.postprocessing.soft_nms import batched_soft_nms

__all__ = ["SephRPN"]

# (gt_boxes (G, 4), anchors (N, 4), L level sizes) -> (int64 (N,), int8 (N,)); see
# sephnet.modeling.matchers.base.
BoxMatcher = Callable[[Boxes, Boxes, List[int]], Tuple[torch.Tensor, torch.Tensor]]


@PROPOSAL_GENERATOR_REGISTRY.register()
class SephRPN(RPN):
    """``RPN`` with an optional box-level anchor matcher (``MODEL.SEPH.RPN.MATCHER.NAME``).

    With neither ``box_matcher`` nor ``sample_over_batch`` it is exactly the backend's ``RPN``
    (same parameters, state_dict keys and losses). Otherwise only anchor labelling changes::

        anchors (L levels) --cat--> (R, 4)
          per image: box_matcher(gt_boxes, anchors, [n_1..n_L])   (or the IoU anchor_matcher)
                     -> labels int8 (R,) -> [boundary ignore]
          sampling:  per image (detectron2)       subsample_labels(labels_i, B, f)
                     or over the batch (original) subsample_labels(cat(labels), B, f)
          -> losses (detectron2's, normalised by N * B)

    The matcher sees boxes and level sizes rather than an IoU matrix, because the ATSS family
    needs anchor centres and levels. B = ``MODEL.RPN.BATCH_SIZE_PER_IMAGE``, f =
    ``POSITIVE_FRACTION``, N = images in the batch.
    """

    @configurable
    def __init__(
        self,
        *,
        box_matcher: Optional[BoxMatcher] = None,
        sample_over_batch: bool = False,
        test_soft_nms: Optional[Dict[str, float]] = None,
        **kwargs,
    ):
        """
        Args:
            box_matcher: labels anchors from boxes (contract in
                :mod:`sephnet.modeling.matchers.base`); when given, the ``anchor_matcher``
                (detectron2's IoU ``Matcher``) is not used for training labels.
            sample_over_batch: sample ``batch_size_per_image`` anchors in total from all N
                images together, as the original did, instead of that many per image. The
                losses keep detectron2's normaliser N * ``batch_size_per_image``, so they are
                about 1/N of detectron2's, again as in the original
                (docs/components.md#anchors-and-rpn).
            test_soft_nms: at test time, select proposals with soft-NMS instead of NMS
                (:meth:`predict_proposals`): ``{"method": "linear" | "gaussian", "sigma": s,
                "score_threshold": t}``; None = the backend's NMS.
            kwargs: the keyword arguments of the backend's ``RPN``.
        """
        super().__init__(**kwargs)
        self.box_matcher = box_matcher
        self.sample_over_batch = bool(sample_over_batch)
        self.test_soft_nms = test_soft_nms

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
        ret["sample_over_batch"] = cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED
        test_nms = cfg.MODEL.SEPH.RPN.TEST_NMS
        if test_nms.METHOD != "nms":
            ret["test_soft_nms"] = {"method": test_nms.METHOD[len("soft_"):],
                                    "sigma": test_nms.SOFT_SIGMA,
                                    "score_threshold": test_nms.SOFT_SCORE_THRESH}
        return ret

    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """The backend's proposal selection; at test time with ``test_soft_nms``, soft-NMS
        in its place::

            each level alone: the backend's find_top_rpn_proposals with NMS off
              (PRE_NMS_TOPK_TEST best, finite, clipped, larger than MIN_SIZE)
            per image: soft-NMS of sigmoid(logits) within each level (IoU threshold
              MODEL.RPN.NMS_THRESH for the linear decay) -> POST_NMS_TOPK_TEST best
              -> objectness_logits = logit(decayed probability)

        Returns:
            N ``Instances`` with ``proposal_boxes`` and ``objectness_logits``, by decreasing
            objectness.
        """
        if self.training or self.test_soft_nms is None:
            return super().predict_proposals(
                anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes)
        with torch.no_grad():
            boxes = self._decode_proposals(anchors, pred_anchor_deltas)
            pre_nms_topk = self.pre_nms_topk[False]
            # an IoU above 1.0 never occurs: the backend's selection without suppression
            per_level = [
                find_top_rpn_proposals([level_boxes], [level_logits], image_sizes, 1.0,
                                       pre_nms_topk, pre_nms_topk, self.min_box_size, False)
                for level_boxes, level_logits in zip(boxes, pred_objectness_logits)
            ]
            return [self._soft_nms_image([level[i] for level in per_level], image_size)
                    for i, image_size in enumerate(image_sizes)]

    def _soft_nms_image(self, levels: List[Instances], image_size: Tuple[int, int]) -> Instances:
        """Soft-NMS within each level of one image's candidates, then the best
        ``post_nms_topk``."""
        boxes = torch.cat([c.proposal_boxes.tensor for c in levels])
        logits = torch.cat([c.objectness_logits for c in levels])
        level_ids = torch.cat([torch.full((len(c),), i, dtype=torch.int64, device=boxes.device)
                               for i, c in enumerate(levels)])
        keep, decayed = batched_soft_nms(boxes, logits.sigmoid(), level_ids,
                                         iou_threshold=self.nms_thresh, **self.test_soft_nms)
        keep, decayed = keep[: self.post_nms_topk[False]], decayed[: self.post_nms_topk[False]]
        result = Instances(image_size)
        result.proposal_boxes = Boxes(boxes[keep])
        # float32 saturates sigmoid at 1 for logits above ~17: keep those finite
        result.objectness_logits = torch.logit(decayed, eps=1e-7)
        return result

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Label anchors (with ``box_matcher`` if set) and sample them (per image or per batch).

        Args:
            anchors: L ``Boxes`` (Hi*Wi*A, 4), shared by the N images.
            gt_instances: N ``Instances`` with ``gt_boxes``.

        Returns:
            N int8 label vectors (R,) in {-1, 0, 1} after sampling, and N (R, 4) matched gt
            boxes (meaningful for positives; zeros for an image without gt).
        """
        if self.box_matcher is None and not self.sample_over_batch:
            return super().label_and_sample_anchors(anchors, gt_instances)
        level_sizes = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        labels_per_image, boxes_per_image = [], []
        for instances in gt_instances:
            gt_boxes = instances.gt_boxes
            if self.box_matcher is not None:
                matched_idxs, labels = self.box_matcher(gt_boxes, anchors, level_sizes)
            else:
                matched_idxs, labels = self.anchor_matcher(pairwise_iou(gt_boxes, anchors))
            labels = labels.to(device=gt_boxes.device)
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            labels_per_image.append(labels)
            if len(gt_boxes) == 0:
                boxes_per_image.append(torch.zeros_like(anchors.tensor))
            else:
                boxes_per_image.append(gt_boxes.tensor[matched_idxs])
        if self.sample_over_batch:
            labels_per_image = self._subsample_over_batch(labels_per_image)
        else:
            labels_per_image = [self._subsample_labels(labels) for labels in labels_per_image]
        return labels_per_image, boxes_per_image

    def _subsample_over_batch(self, labels_per_image: List[torch.Tensor]) -> List[torch.Tensor]:
        """Keep ``batch_size_per_image`` anchors in total over all images; the rest get -1.

        Args:
            labels_per_image: N int8 (R,) label vectors in {-1, 0, 1}.

        Returns:
            N int8 (R,) vectors: 1 / 0 for the sampled positives / negatives, -1 elsewhere.
        """
        flat = torch.cat(labels_per_image)
        pos_idx, neg_idx = subsample_labels(
            flat, self.batch_size_per_image, self.positive_fraction, 0
        )
        sampled = torch.full_like(flat, -1)
        sampled[pos_idx] = 1
        sampled[neg_idx] = 0
        return list(sampled.split([len(labels) for labels in labels_per_image]))
