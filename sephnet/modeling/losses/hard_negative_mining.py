"""Hard negative mining (SSD, Liu et al. 2016, section 2.2 "Hard negative mining").

Of one image's priors, every positive is kept and, of the negatives, only the ones with the
largest classification loss, at most ``neg_pos_ratio`` per positive. With no positive no
negative is kept (as in the paper's reference code and mmdetection's SSD head): such an
image contributes no classification loss.
"""
import torch

__all__ = ["hard_negative_mask"]


def hard_negative_mask(cls_loss: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float) -> torch.Tensor:
    """Choose the negatives of one image that enter the classification loss.

    Args:
        cls_loss: ``(P,)`` float, the per-prior classification loss (its values only rank
            the negatives; no gradient flows through the choice).
        positive: ``(P,)`` bool, the positive priors; every other prior is a negative.
        neg_pos_ratio: negatives kept per positive (the paper's 3); the count is
            ``min(floor(neg_pos_ratio * num_positive), num_negative)``.

    Returns:
        ``(P,)`` bool: the chosen negatives (never a positive). Among equal losses the
        prior of lower index is chosen first.
    """
    if cls_loss.shape != positive.shape or cls_loss.dim() != 1:
        raise ValueError(
            f"hard_negative_mask needs (P,) losses and (P,) positives; got {tuple(cls_loss.shape)} "
            f"and {tuple(positive.shape)}."
        )
    num_negative = int((~positive).sum())
    count = min(int(neg_pos_ratio * int(positive.sum())), num_negative)
    chosen = torch.zeros_like(positive)
    if count == 0:
        return chosen
    ranking = cls_loss.detach().masked_fill(positive, float("-inf"))
    order = torch.sort(ranking, descending=True, stable=True).indices
    chosen[order[:count]] = True
    return chosen
