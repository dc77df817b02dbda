"""Balanced L1 loss of Libra R-CNN (Pang et al. 2019) for box-delta regression."""
import math

import torch

__all__ = ["balanced_l1_loss"]


def balanced_l1_loss(
    diff: torch.Tensor, *, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0
) -> torch.Tensor:
    """Elementwise balanced L1 of a regression error ``x = pred - target``.

    With ``b`` chosen so that ``alpha * ln(b + 1) = gamma`` (the gradient is continuous at
    ``|x| = beta``)::

        |x| <  beta:  alpha / b * (b |x| + 1) * ln(b |x| / beta + 1) - alpha |x|
        |x| >= beta:  gamma |x| + gamma / b - alpha * beta   (the same value at beta)

    Inliers (small errors) get larger gradients than under smooth L1, outliers a constant
    gradient ``gamma``.

    Args:
        diff: float tensor of any shape.
        alpha: > 0; smaller values promote inlier gradients more.
        gamma: > 0; the outliers' gradient bound.
        beta: > 0; where the two pieces meet.

    Returns:
        A tensor of ``diff``'s shape.
    """
    b = math.exp(gamma / alpha) - 1.0
    x = diff.abs()
    inner = alpha / b * (b * x + 1.0) * torch.log(b * x / beta + 1.0) - alpha * x
    outer = gamma * x + gamma / b - alpha * beta
    return torch.where(x < beta, inner, outer)
