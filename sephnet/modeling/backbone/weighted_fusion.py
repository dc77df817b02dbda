"""Fast normalised fusion of same-shape maps (EfficientDet; docs/components.md#fpn "wsum",
docs/components.md#fpn BiFPN).

``y = sum_i relu(w_i) * x_i / (sum_j relu(w_j) + eps)`` with one learnable scalar per input,
initialised to 1, and ``eps = 1e-4`` as in the log.
"""
from typing import Sequence

import torch
from torch import nn

__all__ = ["FastNormalizedFusion"]


class FastNormalizedFusion(nn.Module):
    """Weighted average of ``num_inputs`` maps with ReLU-ed, sum-normalised scalar weights."""

    def __init__(self, num_inputs: int, *, eps: float = 1e-4):
        """
        Args:
            num_inputs: number of maps fused (>= 2).
            eps: added to the weight sum (1e-4 in the log).
        """
        super().__init__()
        if num_inputs < 2:
            raise ValueError(f"FastNormalizedFusion: num_inputs={num_inputs}; expected >= 2.")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_inputs))

    def normalized_weights(self) -> torch.Tensor:
        """``Tensor[num_inputs]``: relu(w) / (sum relu(w) + eps); sums to just under 1."""
        w = torch.relu(self.weight)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            inputs: ``num_inputs`` tensors of one shape ``[N, C, H, W]``.

        Returns:
            ``Tensor[N, C, H, W]``.
        """
        if len(inputs) != self.weight.numel():
            raise ValueError(
                f"FastNormalizedFusion: got {len(inputs)} inputs, built for {self.weight.numel()}."
            )
        w = self.normalized_weights()
        return sum(w[i] * x for i, x in enumerate(inputs))
