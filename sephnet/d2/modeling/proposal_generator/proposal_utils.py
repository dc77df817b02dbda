"""Turning dense RPN predictions into per-image proposal sets (detectron2 v0.6 semantics).

Shape letters: N = #images, L = #feature levels, Hi/Wi = size of level i, A = #cell anchors,
R = #proposals kept for one image.
"""
import math
from typing import List, Sequence, Tuple, Union

import torch

from sephnet.d2.layers import batched_nms, cat
from sephnet.d2.structures import Boxes, Instances

# Objectness logit given to ground-truth boxes appended as proposals: sigmoid(logit) = 1 - 1e-10,
# i.e. log(p / (1 - p)) for that p, evaluated in double precision exactly like detectron2.
_GT_PROPOSAL_LOGIT = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))


def _top_k_per_level(
    proposals: Sequence[torch.Tensor],
    logits: Sequence[torch.Tensor],
    pre_nms_topk: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``pre_nms_topk`` best-scoring candidates of every level, for every image.

    Returns:
        boxes (N, K, 4), scores (N, K) and level ids (K,) int64, where K is the sum over levels of
        min(Hi*Wi*A, pre_nms_topk). Within a level the candidates are in descending score order.
    """
    device = proposals[0].device
    num_images = proposals[0].shape[0]
    rows = torch.arange(num_images, device=device).unsqueeze(1)
    kept_boxes, kept_scores, kept_levels = [], [], []
    for level, (boxes_l, logits_l) in enumerate(zip(proposals, logits)):
        k = min(logits_l.shape[1], pre_nms_topk)
        # A full descending sort (rather than topk) keeps the tie order identical to detectron2.
        sorted_scores, order = logits_l.sort(dim=1, descending=True)
        order = order[:, :k]
        kept_scores.append(sorted_scores[:, :k])
        kept_boxes.append(boxes_l[rows, order])
        kept_levels.append(torch.full((k,), level, dtype=torch.int64, device=device))
    return cat(kept_boxes, dim=1), cat(kept_scores, dim=1), cat(kept_levels, dim=0)


def find_top_rpn_proposals(
    proposals: List[torch.Tensor],
    pred_objectness_logits: List[torch.Tensor],
    image_sizes: List[Tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> List[Instances]:
    """Select the final RPN proposals of every image.

    Steps, per image: take the ``pre_nms_topk`` highest-scoring candidates of each level
    separately; concatenate the levels; drop candidates whose box or score is not finite; clip
    boxes to the image; drop boxes with a side not larger than ``min_box_size``; run NMS
    independently per level (``batched_nms`` with the level as the group id); keep the
    ``post_nms_topk`` best survivors over all levels.

    Args:
        proposals: L tensors, level i of shape (N, Hi*Wi*A, 4), float, absolute XYXY boxes.
        pred_objectness_logits: L tensors, level i of shape (N, Hi*Wi*A), float.
        image_sizes: N pairs (height, width) used for clipping.
        nms_thresh: IoU threshold of the per-level NMS.
        pre_nms_topk: number of candidates kept per level (and per image) before NMS.
        post_nms_topk: number of proposals kept per image after NMS, over all levels.
        min_box_size: boxes whose width or height is <= this (pixels) are removed.
        training: in training, a non-finite box or score raises ``FloatingPointError``
            (training has diverged); at test time such candidates are silently dropped.

    Returns:
        N ``Instances`` of the given image sizes with fields ``proposal_boxes`` (``Boxes``, R x 4)
        and ``objectness_logits`` (R,), sorted by descending objectness.
    """
    all_boxes, all_scores, all_levels = _top_k_per_level(
        proposals, pred_objectness_logits, pre_nms_topk
    )
    results: List[Instances] = []
    for image_id, image_size in enumerate(image_sizes):
        boxes = Boxes(all_boxes[image_id])
        scores = all_scores[image_id]
        levels = all_levels

        finite = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if not bool(finite.all()):
            if training:
                raise FloatingPointError(
                    "Proposals or their scores are NaN/Inf: training diverged."
                )
            boxes, scores, levels = boxes[finite], scores[finite], levels[finite]

        boxes.clip(image_size)
        large_enough = boxes.nonempty(threshold=min_box_size)
        boxes, scores, levels = boxes[large_enough], scores[large_enough], levels[large_enough]

        # batched_nms returns indices sorted by decreasing score, so slicing keeps the best.
        keep = batched_nms(boxes.tensor, scores, levels, nms_thresh)[:post_nms_topk]

        result = Instances(image_size)
        result.proposal_boxes = boxes[keep]
        result.objectness_logits = scores[keep]
        results.append(result)
    return results


def add_ground_truth_to_proposals(
    gt: Union[List[Instances], List[Boxes]], proposals: List[Instances]
) -> List[Instances]:
    """Append each image's ground-truth boxes to its proposals.

    Args:
        gt: N ``Instances`` with a ``gt_boxes`` field (other fields are carried along), or N
            ``Boxes``.
        proposals: N ``Instances`` with ``proposal_boxes`` and ``objectness_logits``.

    Returns:
        N ``Instances``: the proposals of image i followed by its ground-truth boxes, whose
        objectness logit corresponds to a probability of 1 - 1e-10.

    Raises:
        ValueError: if ``gt`` is None or the two lists have different lengths.
    """
    if gt is None:
        raise ValueError("add_ground_truth_to_proposals needs ground truth, got gt=None")
    if len(proposals) != len(gt):
        raise ValueError(
            f"proposals and gt should have the same length as the number of images! "
            f"Got {len(proposals)} proposal sets and {len(gt)} ground-truth sets."
        )
    return [
        add_ground_truth_to_proposals_single_image(gt_i, proposals_i)
        for gt_i, proposals_i in zip(gt, proposals)
    ]


def add_ground_truth_to_proposals_single_image(
    gt: Union[Instances, Boxes], proposals: Instances
) -> Instances:
    """Single-image version of :func:`add_ground_truth_to_proposals`.

    The result has the fields of ``proposals``; each of them must also exist on ``gt`` (after
    ``proposal_boxes``/``objectness_logits`` are derived from it), otherwise ``KeyError``.
    """
    if isinstance(gt, Boxes):
        gt = Instances(proposals.image_size, gt_boxes=gt)
    device = proposals.objectness_logits.device
    gt_as_proposals = Instances(proposals.image_size, **gt.get_fields())
    gt_as_proposals.proposal_boxes = gt.gt_boxes
    gt_as_proposals.objectness_logits = torch.full(
        (len(gt.gt_boxes),), _GT_PROPOSAL_LOGIT, device=device
    )
    missing = [k for k in proposals.get_fields() if not gt_as_proposals.has(k)]
    if missing:
        raise KeyError(f"The attribute(s) {missing} in `proposals` do not exist in `gt`")
    # Instances.cat takes its field list from the first element, so extra gt fields are dropped.
    return Instances.cat([proposals, gt_as_proposals])
