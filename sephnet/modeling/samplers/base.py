"""The ROI-sampler contract, its builder, and the index helpers every sampler shares.

An ROI sampler picks, for one image, which labelled proposals train the box head. It is
called as::

    fg_idx, bg_idx = sampler(
        labels,                      # int64 [R]: class in [0, K), K = background, -1 = ignore
        matched_idxs=matched_idxs,   # int64 [R]: matched gt index of every proposal
        ious=ious,                   # float [R]: IoU of every proposal with that gt
        num_samples=512,             # at most this many proposals in total
        positive_fraction=0.25,      # at most int(num_samples * fraction) positives
        bg_label=K,
        generator=None,              # optional torch.Generator (else the global RNG)
    )

Returns ``fg_idx`` and ``bg_idx``, int64 index vectors into ``[0, R)``: ``labels[fg_idx]``
are all foreground (neither -1 nor ``bg_label``), ``labels[bg_idx]`` all ``bg_label``. An
ignored (-1) entry is never returned.

Counts follow detectron2's ``subsample_labels`` (docs/components.md#conventions), for every
sampler: ``num_pos = min(#foreground, int(num_samples * positive_fraction))`` and
``num_neg = min(#background, num_samples - num_pos)``; no index is returned twice. So an
image with too few proposals yields fewer than ``num_samples`` ROIs. The original
("new rcn sample", docs/components.md#roi-sampling) always returned exactly ``num_samples`` ROIs,
repeating indices when it ran short and falling back to uniform picks over all valid proposals;
samplers
here only decide *which* proposals fill those counts.

``matched_idxs`` and ``ious`` are what a max-IoU matcher gives: for a proposal with no gt
in the image they may hold anything (0 is customary); samplers that read them use them
only for the entries they concern (positives' gt index, negatives' IoU).

Samplers hold no tensors and no state; they are plain callables (not ``nn.Module`` s), so
they add nothing to a checkpoint.
"""
from typing import Any, Optional, Tuple

import torch

from sephnet.backend import CfgNode, configurable
from sephnet.modeling.registry import SEPH_ROI_SAMPLER_REGISTRY, get_registered

__all__ = ["ROISampler", "build_roi_sampler", "sample_counts", "random_subset"]


class ROISampler:
    """Base class of the samplers in ``SEPH_ROI_SAMPLER_REGISTRY``; see the module docstring.

    A sampler without arguments inherits the constructor, ``from_config`` and ``__repr__``
    here; one with arguments overrides all three."""

    @configurable
    def __init__(self):
        """Takes no arguments; counts come with each call."""

    @classmethod
    def from_config(cls, cfg):
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

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
        """
        Args:
            labels: int64 ``[R]``; ``bg_label`` = background, -1 = ignore, else foreground.
            matched_idxs: int64 ``[R]``, the matched gt index of each proposal.
            ious: float ``[R]``, each proposal's IoU with its matched gt.
            num_samples: the most proposals to return (``BATCH_SIZE_PER_IMAGE``).
            positive_fraction: the most foreground as a fraction of ``num_samples``.
            bg_label: the background label (``NUM_CLASSES``).
            generator: random source; ``None`` uses torch's global RNG.

        Returns:
            ``(fg_idx, bg_idx)``: int64 ``[P]`` and ``[N]`` with ``P + N <= num_samples``.
        """
        raise NotImplementedError

    @staticmethod
    def split(
        labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
    ) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
        """The foreground and background entries of ``labels`` and how many of each to take.

        Returns:
            ``(foreground, background, num_pos, num_neg)``: int64 indices into ``labels``,
            ascending, and the counts of :func:`sample_counts`.
        """
        foreground = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
        background = torch.nonzero(labels == bg_label, as_tuple=True)[0]
        num_pos, num_neg = sample_counts(
            foreground.numel(), background.numel(), num_samples, positive_fraction
        )
        return foreground, background, num_pos, num_neg


def sample_counts(
    num_foreground: int, num_background: int, num_samples: int, positive_fraction: float
) -> Tuple[int, int]:
    """How many foreground and background proposals to take (detectron2's rule).

    Args:
        num_foreground, num_background: how many of each are available.
        num_samples, positive_fraction: as in :meth:`ROISampler.__call__`.

    Returns:
        ``(num_pos, num_neg)``: ``num_pos = min(num_foreground, int(num_samples *
        positive_fraction))``, ``num_neg = min(num_background, num_samples - num_pos)``.
    """
    num_pos = min(num_foreground, int(num_samples * positive_fraction))
    num_neg = min(num_background, num_samples - num_pos)
    return num_pos, num_neg


def random_subset(
    indices: torch.Tensor, k: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``k`` distinct entries of ``indices`` in random order (the first ``k`` of a permutation).

    Draws one ``torch.randperm(len(indices))`` exactly as detectron2's ``subsample_labels``
    does, so with the same RNG state both pick the same entries. With a ``generator`` the
    permutation is drawn on the generator's device and moved to ``indices``' device.

    Args:
        indices: int64 ``[n]``.
        k: how many to keep, ``0 <= k <= n``.
        generator: random source; ``None`` uses torch's global RNG.

    Returns:
        int64 ``[k]``.
    """
    if generator is None:
        perm = torch.randperm(indices.numel(), device=indices.device)
    else:
        perm = torch.randperm(indices.numel(), generator=generator, device=generator.device)
        perm = perm.to(indices.device)
    return indices[perm[:k]]


def build_roi_sampler(cfg: CfgNode) -> Any:
    """Build the ROI sampler named by ``MODEL.SEPH.SAMPLER.NAME``.

    Every entry of ``SEPH_ROI_SAMPLER_REGISTRY`` is called as ``entry(cfg)`` (a
    ``@configurable`` class).

    Raises:
        ValueError: the name is not registered (the message lists the registered names).
    """
    name = cfg.MODEL.SEPH.SAMPLER.NAME
    return get_registered(SEPH_ROI_SAMPLER_REGISTRY, name, "MODEL.SEPH.SAMPLER.NAME")(cfg)
