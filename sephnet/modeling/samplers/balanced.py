"""The log's "new rcn sample": instance-balanced positives and IoU-balanced negatives
(docs/components.md#roi-sampling).

In the spirit of Libra R-CNN's balanced sampling: rather than drawing the foreground
uniformly (large objects with many overlapping proposals dominate), every gt instance gets
an equal share; rather than drawing the background uniformly (mostly IoU ~ 0), every IoU
bin gets an equal share, so harder negatives (IoU near the threshold) are seen more often.
"""
from typing import Optional, Tuple

import torch

from sephnet.backend import configurable
from sephnet.modeling.registry import SEPH_ROI_SAMPLER_REGISTRY
from sephnet.modeling.samplers.base import ROISampler, random_subset

__all__ = ["BalancedROISampler", "iou_bins", "quota_sample"]


def iou_bins(ious: torch.Tensor, num_bins: int, low: float, high: float) -> torch.Tensor:
    """Bin index of each IoU for ``num_bins`` equal bins over ``[low, high]``.

    ``index = floor((iou - low) / ((high - low) / num_bins))`` clipped to ``[0, num_bins-1]``
    (values above ``high`` go to the last bin), computed in float64.

    Args:
        ious: float ``[n]``.
        num_bins: ``>= 1``.
        low, high: the binned range, ``low < high``.

    Returns:
        int64 ``[n]``.
    """
    width = (high - low) / num_bins
    index = torch.floor((ious.to(torch.float64) - low) / width).to(torch.int64)
    return index.clamp(0, num_bins - 1)


def quota_sample(
    group_ids: torch.Tensor, k: int, quota: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Pick ``k`` distinct positions, at most ``quota`` per group at first, then fill at random.

    Step 1: from every group take ``min(quota, group size)`` random members. Step 2: take
    the ``k - (taken in step 1)`` still missing uniformly from the members not taken yet.
    Draws one ``torch.rand(n)`` (the random order inside groups), then one ``randperm`` of
    the leftovers.

    Args:
        group_ids: int64 ``[n]``, the group of each candidate.
        k: how many to pick, ``0 <= k <= n``.
        quota: the per-group cap of step 1, ``>= 0``.
        generator: random source; ``None`` uses torch's global RNG.

    Returns:
        int64 ``[k]`` positions into ``group_ids`` (step-1 picks first), no repeats. If the
        capped picks of step 1 exceed ``k`` (``quota * #groups > k``), ``k`` of them are kept
        at random and step 2 is skipped.
    """
    n = group_ids.numel()
    device = group_ids.device
    if k == 0 or n == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    if generator is None:
        keys = torch.rand(n, device=device)
    else:
        keys = torch.rand(n, generator=generator, device=generator.device).to(device)
    # Random order, then a stable sort by group: members of a group become contiguous and
    # appear in random order, so "the first `quota` of each group" is a random subset.
    order = torch.argsort(keys)
    order = order[torch.sort(group_ids[order], stable=True)[1]]
    _, counts = torch.unique_consecutive(group_ids[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank_in_group = torch.arange(n, device=device) - starts
    first = order[rank_in_group < quota]
    if first.numel() > k:  # more than k under the caps (quota * #groups > k): pick k of them
        return random_subset(first, k, generator)
    leftover = torch.ones(n, dtype=torch.bool, device=device)
    leftover[first] = False
    fill = random_subset(torch.nonzero(leftover, as_tuple=True)[0], k - first.numel(), generator)
    return torch.cat([first, fill])


@SEPH_ROI_SAMPLER_REGISTRY.register()
class BalancedROISampler(ROISampler):
    """Foreground balanced per gt instance, background balanced over IoU bins; each switchable.

    With ``P`` foreground and ``N`` background to take (detectron2's counts, see
    :mod:`~sephnet.modeling.samplers.base`):

    * ``balanced_pos``: group the foreground by matched gt (``matched_idxs``); with ``G``
      groups take ``min(P // G, group size)`` at random from each, then fill up to ``P``
      uniformly from the foreground not taken yet. Off: ``P`` uniform picks.
    * ``balanced_neg``: bin the background's ``ious`` into ``num_neg_bins`` equal bins over
      ``[neg_low_iou, neg_high_iou]`` (see :func:`iou_bins`); take ``min(N // num_neg_bins,
      bin size)`` at random from each bin (empty bins included in the division), then fill
      up to ``N`` uniformly from the rest. Off: ``N`` uniform picks.

    Log defaults: 8 bins over [-0.2, 0.5] (width 0.0875). IoUs are >= 0, so bins 0 and 1 are
    always empty and every IoU below 0.0625 falls in bin 2 (which is why the original's
    reporting of IoU < 0.0625 as 0 changes nothing here): effectively 6 bins of ``N // 8``
    plus a uniform fill of about ``N / 4``. Rows: "new rcn sample" = both on (sephv14*,
    recipes 3-9); sephv16 = both off; sephv18 = positives only; sephv18_1 = negatives only.

    With both switches off the draws are exactly :class:`RandomROISampler`'s (two
    permutations), so sephv16 equals the random sampler pick for pick.

    Differences from the original: detectron2's counts, no repeated indices (the original
    always returned exactly ``BATCH_SIZE_PER_IMAGE`` ROIs, repeating when short); the
    balanced samplers are used whenever their side has something to draw (the original
    drew uniformly over all valid proposals in its "otherwise" case, e.g. an image with no
    foreground).
    """

    @configurable
    def __init__(
        self,
        *,
        balanced_pos: bool = True,
        balanced_neg: bool = True,
        num_neg_bins: int = 8,
        neg_low_iou: float = -0.2,
        neg_high_iou: float = 0.5,
    ):
        """
        Args:
            balanced_pos: balance the foreground over gt instances.
            balanced_neg: balance the background over IoU bins.
            num_neg_bins: number of equal IoU bins, ``>= 1``.
            neg_low_iou, neg_high_iou: the binned IoU range, ``low < high``.

        Raises:
            ValueError: ``num_neg_bins < 1`` or ``neg_low_iou >= neg_high_iou``.
        """
        if isinstance(num_neg_bins, bool) or not isinstance(num_neg_bins, int) or num_neg_bins < 1:
            raise ValueError(
                f"BalancedROISampler: num_neg_bins={num_neg_bins!r}; expected an int >= 1."
            )
        if not neg_low_iou < neg_high_iou:
            raise ValueError(
                f"BalancedROISampler: neg_low_iou={neg_low_iou!r} must be < "
                f"neg_high_iou={neg_high_iou!r}."
            )
        self.balanced_pos = bool(balanced_pos)
        self.balanced_neg = bool(balanced_neg)
        self.num_neg_bins = num_neg_bins
        self.neg_low_iou = float(neg_low_iou)
        self.neg_high_iou = float(neg_high_iou)

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL.SEPH.SAMPLER
        return {
            "balanced_pos": node.BALANCED_POS,
            "balanced_neg": node.BALANCED_NEG,
            "num_neg_bins": node.NUM_NEG_BINS,
            "neg_low_iou": node.NEG_LOW_IOU,
            "neg_high_iou": node.NEG_HIGH_IOU,
        }

    def __call__(
        self,
        labels: torch.Tensor,
        *,
        matched_idxs: torch.Tensor,
        ious: torch.Tensor,
        num_samples: int,
        positive_fraction: float,
        bg_label: int,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """See :class:`~sephnet.modeling.samplers.base.ROISampler`; positives are drawn first."""
        foreground, background, num_pos, num_neg = self.split(
            labels, num_samples, positive_fraction, bg_label
        )
        if self.balanced_pos and num_pos > 0:
            gt_ids = matched_idxs[foreground]
            num_groups = torch.unique(gt_ids).numel()
            fg_idx = foreground[quota_sample(gt_ids, num_pos, num_pos // num_groups, generator)]
        else:
            fg_idx = random_subset(foreground, num_pos, generator)
        if self.balanced_neg and num_neg > 0:
            bins = iou_bins(
                ious[background], self.num_neg_bins, self.neg_low_iou, self.neg_high_iou
            )
            bg_idx = background[
                quota_sample(bins, num_neg, num_neg // self.num_neg_bins, generator)
            ]
        else:
            bg_idx = random_subset(background, num_neg, generator)
        return fg_idx, bg_idx

    def __repr__(self) -> str:
        return (
            f"BalancedROISampler(balanced_pos={self.balanced_pos}, balanced_neg="
            f"{self.balanced_neg}, num_neg_bins={self.num_neg_bins}, neg_low_iou="
            f"{self.neg_low_iou}, neg_high_iou={self.neg_high_iou})"
        )
