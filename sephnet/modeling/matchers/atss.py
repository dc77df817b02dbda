"""``ATSSMatcher``: adaptive IoU threshold from the anchors nearest each gt centre (B §2.8).

Log rows: "ASTTMatcher" (recipe 7), sephv14_9/14_10 and the configs based on them; the
pre-fix variant (recipe "3)") is the preset ``ATSSMatcherPreFix``.
"""
from typing import List, Tuple

import torch

from sephnet.backend import Boxes, CfgNode, configurable, pairwise_iou
from sephnet.modeling.matchers.base import (
    centers_inside_gt,
    check_levels,
    empty_match,
    masked_mean_std,
)
from sephnet.modeling.registry import SEPH_ANCHOR_MATCHER_REGISTRY

__all__ = ["ATSSMatcher", "ATSSMatcherPreFix"]


@SEPH_ANCHOR_MATCHER_REGISTRY.register()
class ATSSMatcher:
    """ATSS-style anchor matcher with candidates chosen by centre distance, per level.

    For every gt g (G of them) and every level l::

        candidates_g = on each level, the k anchors whose centres are nearest g's centre
                       (all anchors of a level that has fewer than k)            -> <= L*k
        S_g          = candidates_g with IoU >= min_iou
        mu_g, sd_g   = mean and population std of IoU over S_g  (0, 0 if S_g is empty)
        t_g          = min(mu_g + sd_g, max IoU over candidates_g)

    Then, unlike the ATSS paper, positives are searched among **all** anchors: anchor a
    passes gt g iff IoU(a, g) >= t_g and a's centre lies inside g (bounds included). An
    anchor passing several gts takes the one of highest IoU, and is positive (label 1) only
    if that IoU > min_iou; every other anchor is negative (0). There is no ignore label.

    Distances are Euclidean in absolute input pixels (detectron2's convention). The original
    measured them in coordinates normalised by the padded image height and width; the two
    orders differ only when that image is not square. Equal distances (the A anchors of one
    location share a centre) are broken by anchor order, so the result is deterministic.

    ``pre_fix=True`` reproduces the version of 2020-07-30..10-28 (log recipe "3)"), as B §2.8
    describes it: the candidate count is multiplied by 9 once more; level l's candidate
    indices are offset by the size of level l-1 alone instead of all previous levels (our
    reading of "non-cumulative offsets": from the third level on the candidates land on the
    wrong anchors, as in the original); mu/sd use all candidates (no ``min_iou`` filter);
    t_g is not capped by the best candidate; and the IoU test is strict (IoU > t_g).
    """

    @configurable
    def __init__(self, *, topk: int, min_iou: float = 0.1, pre_fix: bool = False):
        """
        Args:
            topk: candidates per level and gt (k); the original uses 9 x anchors per location.
            min_iou: IoU floor: candidates below it are left out of mu/sd, and a positive
                anchor's IoU must exceed it.
            pre_fix: reproduce the pre-2020-10-28 version (see the class docstring).
        """
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"ATSSMatcher topk must be a positive int, got {topk!r}.")
        if not 0.0 <= min_iou < 1.0:
            raise ValueError(f"ATSSMatcher min_iou must be in [0, 1), got {min_iou!r}.")
        self.topk = topk
        self.min_iou = float(min_iou)
        self.pre_fix = bool(pre_fix)

    @classmethod
    def from_config(cls, cfg: CfgNode, num_cell_anchors: int) -> dict:
        node = cfg.MODEL.SEPH.RPN.MATCHER
        return {
            "topk": node.TOPK_PER_CELL_ANCHOR * num_cell_anchors,
            "min_iou": node.MIN_IOU,
        }

    def candidates(
        self, gt_boxes: Boxes, anchors: Boxes, num_anchors_per_level: List[int]
    ) -> torch.Tensor:
        """bool (G, N): which anchors are distance candidates of which gt."""
        gt_centers = gt_boxes.get_centers()  # (G, 2)
        anchor_centers = anchors.get_centers()  # (N, 2)
        topk = self.topk * 9 if self.pre_fix else self.topk
        device = gt_centers.device
        is_candidate = torch.zeros(len(gt_boxes), len(anchors), dtype=torch.bool, device=device)
        rows = torch.arange(len(gt_boxes), device=device)[:, None]
        start = 0
        for level, count in enumerate(num_anchors_per_level):
            if count > 0:
                level_centers = anchor_centers[start : start + count]
                dist2 = (gt_centers[:, None, :] - level_centers[None, :, :]).pow(2).sum(-1)
                nearest = dist2.argsort(dim=1, stable=True)[:, : min(topk, count)]  # (G, k_l)
                offset = start
                if self.pre_fix:
                    offset = num_anchors_per_level[level - 1] if level > 0 else 0
                is_candidate[rows, nearest + offset] = True
            start += count
        return is_candidate

    def thresholds(self, iou: torch.Tensor, is_candidate: torch.Tensor) -> torch.Tensor:
        """Per-gt IoU thresholds t (G,) from the IoUs (G, N) and candidates (G, N) of every gt."""
        in_stats = is_candidate if self.pre_fix else is_candidate & (iou >= self.min_iou)
        mean, std, _ = masked_mean_std(iou, in_stats)
        if self.pre_fix:
            return mean + std
        best_candidate = torch.where(is_candidate, iou, torch.zeros_like(iou)).max(dim=1).values
        return torch.minimum(mean + std, best_candidate)

    def __call__(
        self, gt_boxes: Boxes, anchors: Boxes, num_anchors_per_level: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Label N anchors against G gt boxes; see :mod:`sephnet.modeling.matchers.base`.

        Returns:
            matched_idxs int64 (N,), match_labels int8 (N,) in {0, 1}.
        """
        check_levels(anchors, num_anchors_per_level)
        if len(gt_boxes) == 0 or len(anchors) == 0:
            return empty_match(len(anchors), anchors.tensor.device)
        iou = pairwise_iou(gt_boxes, anchors)  # (G, N)
        is_candidate = self.candidates(gt_boxes, anchors, num_anchors_per_level)
        thresh = self.thresholds(iou, is_candidate)[:, None]
        passes = (iou > thresh) if self.pre_fix else (iou >= thresh)
        passes &= centers_inside_gt(gt_boxes, anchors)
        best_iou, best_gt = torch.where(passes, iou, torch.full_like(iou, -1.0)).max(dim=0)
        positive = best_iou > self.min_iou
        matched_idxs = torch.where(positive, best_gt, iou.argmax(dim=0))
        return matched_idxs, positive.to(torch.int8)


@SEPH_ANCHOR_MATCHER_REGISTRY.register()
def ATSSMatcherPreFix(cfg: CfgNode, num_cell_anchors: int) -> ATSSMatcher:  # noqa: N802
    """Preset: :class:`ATSSMatcher` with ``pre_fix=True`` (log recipe "3)", confidence M).

    The registered name is the config value ``MODEL.SEPH.RPN.MATCHER.NAME: ATSSMatcherPreFix``.
    """
    return ATSSMatcher(cfg, num_cell_anchors, pre_fix=True)
