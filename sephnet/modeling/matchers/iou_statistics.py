"""``IoUStatisticsMatcher``: a per-gt IoU threshold from statistics over all anchors
(docs/components.md#anchors-and-rpn).

One forward, three registered presets that differ only in options:

========================  ============  ====================  =========================
registered name           ignore band   statistics weights    log rows
========================  ============  ====================  =========================
``ATSSMatcher3``          yes           uniform               "ASTTMatcher3" (recipe 4),
                                                              sephv11..14 and most
                                                              sephv14_* configs
``ATSSMatcher4``          no            uniform               "ASTTMatcher4" (recipe 5),
                                                              sephv14_2, sephNv15
``DynamicMatcher``        no            n_0 / n_l per level   recipe 8, sephv14_11
========================  ============  ====================  =========================
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

__all__ = ["IoUStatisticsMatcher", "ATSSMatcher3", "ATSSMatcher4", "DynamicMatcher"]


class IoUStatisticsMatcher:
    """Anchor matcher whose per-gt threshold is mean + std of the IoUs above a floor.

    With (lo, hi) = the RPN IoU thresholds and m = hi - lo, for every gt g over **all** N
    anchors (no distance-based candidates)::

        S_g        = anchors with IoU(a, g) > min_iou
        mu_g, sd_g = (weighted) mean and population std of IoU over S_g
        t_g        = min(mu_g + sd_g, hi)                 (hi if S_g is empty)

    Then IoUs of anchors whose centre lies outside g (bounds included) are set to 0, each
    anchor takes the gt of highest remaining IoU s (that gt's threshold is t), and::

        label 1   if s > min_iou and s >= t
        label -1  if ignore_band and t - m < s < t and s > min_iou + m
        label 0   otherwise

    Level weighting (``level_weighted=True``, the DynamicMatcher): every anchor of level l
    weighs n_0 / n_l in mu and sd, where n_l is the number of anchors on level l, so each
    level contributes as much as the finest one.

    The original's DynamicMatcher builds S_g with IoU >= min_iou; the shared forward uses
    IoU > min_iou for all three presets (they differ only for an IoU exactly equal to it).
    """

    @configurable
    def __init__(
        self,
        *,
        iou_thresholds: Tuple[float, float],
        min_iou: float = 0.1,
        ignore_band: bool,
        level_weighted: bool,
    ):
        """
        Args:
            iou_thresholds: (lo, hi): hi caps every threshold, hi - lo is the ignore margin.
            min_iou: IoU floor for the statistics and for positives.
            ignore_band: label anchors just below their threshold -1 (ATSSMatcher3).
            level_weighted: weight statistics by n_0 / n_l (DynamicMatcher).
        """
        if len(iou_thresholds) != 2 or not 0.0 <= iou_thresholds[0] <= iou_thresholds[1] <= 1.0:
            raise ValueError(
                f"iou_thresholds must be (lo, hi) with 0 <= lo <= hi <= 1, got {iou_thresholds!r} "
                "(MODEL.RPN.IOU_THRESHOLDS)."
            )
        if not 0.0 <= min_iou < 1.0:
            raise ValueError(f"min_iou must be in [0, 1), got {min_iou!r}.")
        self.low, self.high = float(iou_thresholds[0]), float(iou_thresholds[1])
        self.min_iou = float(min_iou)
        self.ignore_band = bool(ignore_band)
        self.level_weighted = bool(level_weighted)

    @classmethod
    def from_config(cls, cfg: CfgNode, num_cell_anchors: int) -> dict:
        del num_cell_anchors  # these matchers use all anchors, whatever their count
        return {
            "iou_thresholds": tuple(cfg.MODEL.RPN.IOU_THRESHOLDS),
            "min_iou": cfg.MODEL.SEPH.RPN.MATCHER.MIN_IOU,
        }

    def level_weights(self, num_anchors_per_level: List[int], device: torch.device) -> torch.Tensor:
        """float (N,): n_0 / n_l for every anchor of level l (levels with n_l = 0 add nothing)."""
        counts = torch.tensor(num_anchors_per_level, dtype=torch.float32, device=device)
        per_level = counts[0] / counts.clamp(min=1)
        return per_level.repeat_interleave(torch.tensor(num_anchors_per_level, device=device))

    def thresholds(self, iou: torch.Tensor, num_anchors_per_level: List[int]) -> torch.Tensor:
        """Per-gt IoU thresholds t (G,) from the IoUs (G, N) of every gt with every anchor."""
        weights = None
        if self.level_weighted:
            weights = self.level_weights(num_anchors_per_level, iou.device).to(iou.dtype)
        mean, std, has_any = masked_mean_std(iou, iou > self.min_iou, weights)
        return torch.where(has_any, mean + std, torch.ones_like(mean)).clamp(max=self.high)

    def __call__(
        self, gt_boxes: Boxes, anchors: Boxes, num_anchors_per_level: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Label N anchors against G gt boxes; see :mod:`sephnet.modeling.matchers.base`.

        Returns:
            matched_idxs int64 (N,), match_labels int8 (N,) in {-1, 0, 1}.
        """
        check_levels(anchors, num_anchors_per_level)
        if len(gt_boxes) == 0 or len(anchors) == 0:
            return empty_match(len(anchors), anchors.tensor.device)
        iou = pairwise_iou(gt_boxes, anchors)  # (G, N)
        thresh = self.thresholds(iou, num_anchors_per_level)
        inside_iou = torch.where(centers_inside_gt(gt_boxes, anchors), iou, torch.zeros_like(iou))
        score, best_gt = inside_iou.max(dim=0)  # (N,)
        t = thresh[best_gt]
        positive = (score > self.min_iou) & (score >= t)
        labels = positive.to(torch.int8)
        if self.ignore_band:
            margin = self.high - self.low
            in_band = (score > t - margin) & (score < t) & (score > self.min_iou + margin)
            ignore = ~positive & in_band
            labels[ignore] = -1
        matched_idxs = torch.where(positive, best_gt, iou.argmax(dim=0))
        return matched_idxs, labels


@SEPH_ANCHOR_MATCHER_REGISTRY.register()
def ATSSMatcher3(cfg: CfgNode, num_cell_anchors: int) -> IoUStatisticsMatcher:  # noqa: N802
    """Preset: uniform statistics with the ignore band (log "ASTTMatcher3")."""
    return IoUStatisticsMatcher(cfg, num_cell_anchors, ignore_band=True, level_weighted=False)


@SEPH_ANCHOR_MATCHER_REGISTRY.register()
def ATSSMatcher4(cfg: CfgNode, num_cell_anchors: int) -> IoUStatisticsMatcher:  # noqa: N802
    """Preset: uniform statistics, no ignore band (log "ASTTMatcher4")."""
    return IoUStatisticsMatcher(cfg, num_cell_anchors, ignore_band=False, level_weighted=False)


@SEPH_ANCHOR_MATCHER_REGISTRY.register()
def DynamicMatcher(cfg: CfgNode, num_cell_anchors: int) -> IoUStatisticsMatcher:  # noqa: N802
    """Preset: level-weighted statistics (n_0 / n_l), no ignore band (log "DynamicMatcher")."""
    return IoUStatisticsMatcher(cfg, num_cell_anchors, ignore_band=False, level_weighted=True)
