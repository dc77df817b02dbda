"""Gradient harmonizing weights (Li et al. 2019, "Gradient Harmonized Single-stage Detector")
for the ROI classifier (GHM-C) and box regression (GHM-R).

GHM reweights every example by the inverse density of its gradient norm ``g`` in [0, 1]:
with ``M`` equal-width bins over [0, 1], ``n_k`` examples in bin k, ``T`` examples and ``V``
non-empty bins, an example in bin k gets ``w = T / (n_k * V)``. The weights average to 1,
so the loss keeps its scale; crowded bins (the many easy examples, and the very hard
outliers) are down-weighted. With a momentum ``m`` the bin counts are smoothed over
iterations (``a_k = m a_k + (1 - m) n_k`` for the non-empty bins, ``w = T / (a_k V)``).

The gradient norms used here:

* GHM-C, softmax ROI classifier: ``g = 1 - p_t`` (the derivative of the cross-entropy with
  respect to the label's logit, in absolute value);
* GHM-R: ``g = |d| / sqrt(d^2 + mu^2)``, the gradient of the authentic smooth L1 (ASL1)
  ``sqrt(d^2 + mu^2) - mu`` of a regression error ``d``.
"""
import torch
from torch import nn

__all__ = ["GradientDensityWeights", "asl1_loss"]


class GradientDensityWeights(nn.Module):
    """Maps gradient norms ``g[...]`` in [0, 1] to GHM weights of the same shape.

    With ``momentum > 0`` the smoothed bin counts are a buffer ``acc_count[bins]`` (saved in
    checkpoints, so a resumed run continues them), updated in training mode only; with 0
    the module has no state.
    """

    def __init__(self, *, bins: int = 10, momentum: float = 0.0):
        """
        Args:
            bins: M, the number of equal-width bins over [0, 1], >= 1.
            momentum: m in [0, 1); 0 uses the current batch's counts only.

        Raises:
            ValueError: ``bins < 1`` or ``momentum`` outside [0, 1).
        """
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"GradientDensityWeights: bins={bins!r}; expected an int >= 1.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"GradientDensityWeights: momentum={momentum!r}; expected [0, 1).")
        self.bins = bins
        self.momentum = float(momentum)
        if self.momentum > 0:
            self.register_buffer("acc_count", torch.zeros(bins))

    @torch.no_grad()
    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """
        Args:
            g: float tensor of gradient norms in [0, 1] (any shape; may be empty).

        Returns:
            Detached weights of ``g``'s shape and dtype; they average to 1 without momentum.
        """
        flat = g.detach().reshape(-1)
        if flat.numel() == 0:
            return torch.zeros_like(g)
        index = (flat.clamp(0.0, 1.0) * self.bins).floor().long().clamp(max=self.bins - 1)
        counts = torch.bincount(index, minlength=self.bins).to(flat.dtype)
        nonempty = counts > 0
        if self.momentum > 0:
            acc = self.acc_count.to(flat.dtype)
            acc = torch.where(nonempty, self.momentum * acc + (1 - self.momentum) * counts, acc)
            if self.training:  # evaluation-mode calls (e.g. validation losses) leave it
                self.acc_count.copy_(acc)
            counts = acc
        total, num_nonempty = flat.numel(), int(nonempty.sum())
        weights = total / (counts[index] * num_nonempty)
        return weights.reshape(g.shape)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}"


def asl1_loss(diff: torch.Tensor, mu: float) -> torch.Tensor:
    """Elementwise authentic smooth L1 ``sqrt(d^2 + mu^2) - mu`` (GHM-R's base loss).

    Args:
        diff: float tensor, the regression error ``d``.
        mu: > 0; below about ``mu`` the loss is quadratic, above it linear.

    Returns:
        A tensor of ``diff``'s shape.
    """
    return torch.sqrt(diff * diff + mu * mu) - mu
