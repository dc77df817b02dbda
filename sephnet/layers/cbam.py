"""Config-free CBAM block as the experiment log implemented it (docs/components.md#roi-hooks).

::

    x [N, C, H, W]
      channel attention:
        g = concat[GAP(x), GMP(x)]                      [N, 2C]
        a_c = sigmoid(FC_C(relu(FC_{C/ratio}(g))))      [N, C]    (both FCs with bias)
        x <- x * a_c[:, :, None, None]
      spatial attention:
        m = concat[mean_c(x), max_c(x)]                 [N, 2, H, W]
        a_s = sigmoid(conv7x7(m) -> 1 channel, bias)    [N, 1, H, W]   (SAME padding)
        x <- x * a_s
    y [N, C, H, W]

Reproduced literally (docs/components.md#roi-hooks): the channel attention runs ONE MLP on the
concatenation of the average- and max-pooled vectors, unlike the CBAM paper (a shared MLP applied to
each, then
summed). Used by ``OneHeadCBAMROIHeadsHook`` (log row sephv14_28).
"""
import torch
from torch import nn

__all__ = ["CBAM"]


class CBAM(nn.Module):
    """Channel then spatial attention; see the module docstring."""

    def __init__(self, channels: int, *, ratio: int = 16, kernel_size: int = 7):
        """
        Args:
            channels: C.
            ratio: reduction of the hidden FC, width ``max(1, C // ratio)`` (16 in the log).
            kernel_size: odd size of the spatial-attention conv (7 in the log).
        """
        super().__init__()
        if channels < 1 or ratio < 1:
            raise ValueError(f"CBAM: channels={channels} and ratio={ratio} must both be >= 1.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size={kernel_size}; expected an odd int >= 1.")
        hidden = max(1, channels // ratio)
        self.squeeze = nn.Linear(2 * channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``x[N, C, H, W]`` -> gate ``[N, C]`` in (0, 1)."""
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``x[N, C, H, W]`` -> gate ``[N, 1, H, W]`` in (0, 1)."""
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]``; N may be 0.

        Returns:
            ``Tensor[N, C, H, W]``.
        """
        x = x * self.channel_attention(x)[:, :, None, None]
        return x * self.spatial_attention(x)
