"""Online hard example mining (Shrivastava et al. 2016) as an ROI sampler.

OHEM keeps the ROIs the current model gets most wrong: the ROI heads first run the box
head and predictor on every candidate proposal (without gradients) and pass each one's
classification loss to the sampler, which keeps the highest-loss foreground and background
up to detectron2's counts. Like mmdetection's OHEM sampler it ranks by the classification
loss (the configured one, e.g. focal or GHM-C; the paper also added the box loss).
"""
from typing import Optional, Tuple

import torch

from sephnet.modeling.registry import SEPH_ROI_SAMPLER_REGISTRY
from sephnet.modeling.samplers.base import ROISampler

__all__ = ["OHEMROISampler", "hardest"]


def hardest(indices: torch.Tensor, losses: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` entries of ``indices`` with the largest ``losses[indices]``, hardest first.

    Ties keep the lower position first (a stable sort), so the pick is deterministic.

    Args:
        indices: int64 ``[n]``; losses: float ``[R]`` indexed by them; ``0 <= k <= n``.

    Returns:
        int64 ``[k]``.
    """
    order = torch.sort(losses[indices], descending=True, stable=True)[1]
    return indices[order[:k]]


@SEPH_ROI_SAMPLER_REGISTRY.register()
class OHEMROISampler(ROISampler):
    """Keep the highest-loss foreground and background ROIs (detectron2's counts).

    ``num_pos`` and ``num_neg`` are those of every sampler (see
    :mod:`~sephnet.modeling.samplers.base`); within each side the ROIs are ranked by
    ``roi_losses``, an extra keyword the ROI heads supply because ``ranks_by_loss`` is set.
    No randomness: ``generator`` is not used. Needs ``SephStandardROIHeads``.
    """

    #: Read by SephStandardROIHeads: compute every candidate's loss before sampling.
    ranks_by_loss = True

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
        roi_losses: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """See :class:`~sephnet.modeling.samplers.base.ROISampler`.

        Args:
            roi_losses: float ``[R]``, each proposal's current loss (required).

        Raises:
            ValueError: ``roi_losses`` is missing or not ``[R]``.
        """
        if roi_losses is None or roi_losses.shape != labels.shape:
            got = None if roi_losses is None else list(roi_losses.shape)
            raise ValueError(
                f"OHEMROISampler needs roi_losses of shape {list(labels.shape)} (one loss per "
                f"proposal, given by SephStandardROIHeads); got {got}."
            )
        foreground, background, num_pos, num_neg = self.split(
            labels, num_samples, positive_fraction, bg_label
        )
        return hardest(foreground, roi_losses, num_pos), hardest(background, roi_losses, num_neg)
