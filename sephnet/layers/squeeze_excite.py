"""Config-free squeeze-and-excitation block (docs/components.md#backbone-hooks SEBackboneHook,
docs/components.md#roi-hooks SE hooks).

::

    x [N, C, H, W] -> global average pool -> [N, C]
                   -> FC C -> C // ratio (bias) -> ReLU
                   -> FC C // ratio -> C (bias) -> sigmoid -> s [N, C]
    y = x * s[:, :, None, None]
"""
import torch
from torch import nn

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """Channel re-weighting by a two-FC gate on the global average (both FCs with bias)."""

    def __init__(self, channels: int, *, ratio: int = 16):
        """
        Args:
            channels: C.
            ratio: reduction of the hidden FC, width ``max(1, C // ratio)`` (16 in the log).
        """
        super().__init__()
        if channels < 1 or ratio < 1:
            raise ValueError(
                f"SqueezeExcite: channels={channels} and ratio={ratio} must both be >= 1."
            )
        hidden = max(1, channels // ratio)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]``.

        Returns:
            ``Tensor[N, C, H, W]``, ``x`` scaled per channel by a gate in (0, 1).
        """
        s = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean(dim=(2, 3))))))
        return x * s[:, :, None, None]
