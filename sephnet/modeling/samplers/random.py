"""Uniform ROI sampling: detectron2's ``subsample_labels`` as a sephnet sampler (the control)."""
from typing import Optional, Tuple

import torch

from sephnet.backend import subsample_labels
from sephnet.modeling.registry import SEPH_ROI_SAMPLER_REGISTRY
from sephnet.modeling.samplers.base import ROISampler, random_subset

__all__ = ["RandomROISampler"]


@SEPH_ROI_SAMPLER_REGISTRY.register()
class RandomROISampler(ROISampler):
    """Uniformly random foreground and background picks, exactly detectron2's.

    Without a ``generator`` it calls the backend's ``subsample_labels``; with one it draws
    the same two permutations (foreground first, then background) from that generator, so
    a generator seeded with ``s`` picks what ``torch.manual_seed(s)`` then
    ``subsample_labels`` picks. ``matched_idxs`` and ``ious`` are not read. Default of
    ``MODEL.SEPH.SAMPLER.NAME``: with it, Seph ROI heads sample as detectron2's do.
    """

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
        """See :class:`~sephnet.modeling.samplers.base.ROISampler`."""
        if generator is None:
            return subsample_labels(labels, num_samples, positive_fraction, bg_label)
        foreground, background, num_pos, num_neg = self.split(
            labels, num_samples, positive_fraction, bg_label
        )
        return (
            random_subset(foreground, num_pos, generator),
            random_subset(background, num_neg, generator),
        )
