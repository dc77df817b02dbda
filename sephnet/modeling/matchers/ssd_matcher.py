"""SSD's prior matching (Liu et al. 2016, section 2.2 "Matching strategy").

Each ground-truth box is first matched to the prior of highest IoU with it (so every object
has at least one positive prior, however small its overlap), then every other prior is
matched to its best ground truth when that IoU reaches the threshold (0.5 in the paper).
"""
from typing import Tuple

import torch

__all__ = ["match_priors"]


def match_priors(iou: torch.Tensor, threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Match the priors of one image to its ground truth.

    Args:
        iou: ``(G, P)`` float, IoU of every ground-truth box with every prior.
        threshold: the IoU from which a prior is positive.

    Returns:
        matched_idxs: int64 ``(P,)``, the ground-truth index of every prior: the forced one
            for a ground truth's best prior, else the prior's highest-IoU ground truth (0 when
            G = 0), so ``gt[matched_idxs]`` is always valid (detectron2's ``Matcher``
            convention).
        match_labels: int8 ``(P,)``, 1 positive, 0 negative (detectron2's values).

    The forced matches win over thresholded ones, and, when two ground truths share a best
    prior, the later one keeps it (as mmdetection's assigner does). A ground truth's best
    prior is its first prior of highest IoU; the forced prior is positive even when that
    IoU is 0 (a degenerate box), as in the paper's reference code.
    """
    num_gt, num_priors = iou.shape
    if num_gt == 0:
        return (
            torch.zeros(num_priors, dtype=torch.int64, device=iou.device),
            torch.zeros(num_priors, dtype=torch.int8, device=iou.device),
        )
    best_iou, matched_idxs = iou.max(dim=0)
    match_labels = (best_iou >= threshold).to(torch.int8)
    best_prior = iou.argmax(dim=1)  # (G,)
    # assignment in index order: a later ground truth overwrites an earlier one's prior
    for gt_index, prior_index in enumerate(best_prior.tolist()):
        matched_idxs[prior_index] = gt_index
        match_labels[prior_index] = 1
    return matched_idxs, match_labels
