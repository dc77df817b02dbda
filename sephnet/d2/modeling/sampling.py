"""Random fixed-size, fixed-fraction subsampling of foreground/background labels."""

from typing import Tuple

import torch

from sephnet.d2.layers import nonzero_tuple

__all__ = ["subsample_labels"]


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pick at most ``num_samples`` labelled elements, favouring a share of positives.

    Positives are elements whose label is neither -1 (ignore) nor ``bg_label``; negatives are
    those equal to ``bg_label``. Up to ``int(num_samples * positive_fraction)`` positives are
    drawn; the remaining slots are filled with negatives (as many as exist). Ignored elements
    are never returned.

    The draw uses ``torch.randperm`` twice on the labels' device, positives first, so a given
    global RNG state reproduces detectron2's choice exactly.

    Args:
        labels: (N,) integer labels: -1 ignore, ``bg_label`` background, others foreground.
        num_samples: total number of elements to return (fewer if not enough are labelled).
        positive_fraction: target share of positives in [0, 1].
        bg_label: the background label value.

    Returns:
        pos_idx, neg_idx: 1-D int64 index tensors into ``labels``; together at most
        ``num_samples`` long.
    """
    positive = nonzero_tuple((labels != -1) & (labels != bg_label))[0]
    negative = nonzero_tuple(labels == bg_label)[0]

    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)

    pos_pick = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    neg_pick = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[pos_pick], negative[neg_pick]
