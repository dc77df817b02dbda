"""L2Norm: SSD's per-location channel normalisation with a learned per-channel scale
(ParseNet, Liu et al. 2015; used on VGG16's conv4_3 by SSD, whose features have a larger
scale than the later layers')."""
import torch
from torch import nn

__all__ = ["L2Norm"]


class L2Norm(nn.Module):
    """``y[n, c, h, w] = weight[c] * x[n, c, h, w] / (||x[n, :, h, w]||_2 + eps)``."""

    def __init__(self, num_channels: int, *, scale: float = 20.0, eps: float = 1e-10):
        """
        Args:
            num_channels: C of the input.
            scale: initial value of every channel's weight (SSD: 20).
            eps: added to the norm (keeps all-zero locations at 0).
        """
        super().__init__()
        if scale <= 0:
            raise ValueError(f"L2Norm scale must be > 0; got {scale}.")
        self.weight = nn.Parameter(torch.full((num_channels,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, H, W)``; returns the same shape."""
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)
