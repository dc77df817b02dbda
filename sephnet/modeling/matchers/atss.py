"""``ATSSMatcher``: adaptive IoU threshold from the anchors nearest each gt centre
(docs/components.md#anchors-and-rpn).

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
    Statistics are computed on the (G, L*k) candidate IoUs; only the final test touches all
    (G, N) pairs.

    ``pre_fix=True`` reproduces the version of 2020-07-30..10-28 (log recipe "3)"), as
    docs/components.md#anchors-and-rpn describes it: the candidate count is multiplied by 9 once
    more; level l's candidate
    indices are offset by the size of level l-1 alone instead of all previous levels (our
    reading of "non-cumulative offsets": from the third level on the candidates land on the
    wrong anchors, as in the original, and an anchor listed twice counts twice in the
    statistics, as a gather by index does); mu/sd use all candidates (no ``min_iou`` filter);
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

    def candidate_indices(
        self, gt_boxes: Boxes, anchors: Boxes, num_anchors_per_level: List[int]
    ) -> torch.Tensor:
        """int64 (G, C): the distance candidates of every gt, C = sum over levels of min(k, n_l)."""
        gt_centers = gt_boxes.get_centers()  # (G, 2)
        anchor_centers = anchors.get_centers()  # (N, 2)
        topk = self.topk * 9 if self.pre_fix else self.topk
        chosen, start = [], 0
        for level, count in enumerate(num_anchors_per_level):
            if count > 0:
                level_centers = anchor_centers[start : start + count]
                dx = gt_centers[:, 0:1] - level_centers[None, :, 0]  # (G, n_l)
                dy = gt_centers[:, 1:2] - level_centers[None, :, 1]
                dist2 = dx * dx + dy * dy
                offset = start
                if self.pre_fix:
                    offset = num_anchors_per_level[level - 1] if level > 0 else 0
                chosen.append(_nearest(dist2, min(topk, count)) + offset)
            start += count
        return torch.cat(chosen, dim=1)

    def thresholds(self, candidate_iou: torch.Tensor) -> torch.Tensor:
        """Per-gt IoU thresholds t (G,) from the IoUs (G, C) of every gt's candidates."""
        in_stats = torch.ones_like(candidate_iou, dtype=torch.bool)
        if not self.pre_fix:
            in_stats = candidate_iou >= self.min_iou
        mean, std, _ = masked_mean_std(candidate_iou, in_stats)
        if self.pre_fix:
            return mean + std
        return torch.minimum(mean + std, candidate_iou.max(dim=1).values)

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
        candidates = self.candidate_indices(gt_boxes, anchors, num_anchors_per_level)
        thresh = self.thresholds(iou.gather(1, candidates))[:, None]
        passes = (iou > thresh) if self.pre_fix else (iou >= thresh)
        passes &= centers_inside_gt(gt_boxes, anchors)
        best_iou, best_gt = torch.where(passes, iou, torch.full_like(iou, -1.0)).max(dim=0)
        positive = best_iou > self.min_iou
        matched_idxs = torch.where(positive, best_gt, iou.argmax(dim=0))
        return matched_idxs, positive.to(torch.int8)


def _nearest(dist2: torch.Tensor, k: int) -> torch.Tensor:
    """int64 (G, k): per row, the columns of the k smallest values.

    A tie at the k-th value (the A anchors of one location are equally distant) goes to the
    lowest columns, so the choice is deterministic; only rows with such a tie pay for it.
    """
    rows, cols = dist2.shape
    if k >= cols:
        return torch.arange(cols, device=dist2.device).expand(rows, cols)
    values, chosen = dist2.topk(k + 1, dim=1, largest=False)  # ascending
    chosen = chosen[:, :k]
    tied = values[:, k - 1] == values[:, k]
    if tied.any():
        sub, kth = dist2[tied], values[tied, k - 1 : k]
        below, tie = sub < kth, sub == kth
        room = k - below.sum(dim=1, keepdim=True)
        take = below | (tie & (tie.cumsum(dim=1) <= room))
        chosen[tied] = take.nonzero()[:, 1].view(-1, k)
    return chosen


@SEPH_ANCHOR_MATCHER_REGISTRY.register()
def ATSSMatcherPreFix(cfg: CfgNode, num_cell_anchors: int) -> ATSSMatcher:  # noqa: N802
    """Preset: :class:`ATSSMatcher` with ``pre_fix=True`` (log recipe "3)", confidence M).

    The registered name is the config value ``MODEL.SEPH.RPN.MATCHER.NAME: ATSSMatcherPreFix``.
    """
    return ATSSMatcher(cfg, num_cell_anchors, pre_fix=True)
