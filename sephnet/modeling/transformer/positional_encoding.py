"""DETR's 2-D sine positional encoding of a feature map.

For a cell at row y and column x (counted from 1 over the image's *valid*, unpadded cells)
and d = ``num_pos_feats``, with ``normalize`` the counts are first scaled to ``(0, scale]``
by the valid height / width (so the encoding depends on the relative position, not on the
padding of the batch). Frequencies are ``temperature ** (2 * (i // 2) / d)`` for i in [0, d);
channel i of each half is ``sin`` for even i and ``cos`` for odd i::

    pos[0:d]   (rows):    sin/cos(y / temperature ** (2 * (i // 2) / d))
    pos[d:2d]  (columns): sin/cos(x / temperature ** (2 * (i // 2) / d))

The encoding has ``2 * num_pos_feats`` channels, the transformer's width.
"""
import math

import torch
from torch import nn

__all__ = ["SinePositionalEncoding"]


class SinePositionalEncoding(nn.Module):
    """The fixed sine encoding of DETR (no parameters)."""

    def __init__(
        self,
        *,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
    ):
        """
        Args:
            num_pos_feats: channels per axis (d above); the output has 2 * d channels.
            temperature: base of the geometric frequency progression.
            normalize: scale the 1-based cell counts by the valid extent to ``(0, scale]``.
            scale: the largest (normalised) position.
            eps: added to the valid extent before dividing.
        """
        super().__init__()
        if num_pos_feats < 1:
            raise ValueError(f"num_pos_feats={num_pos_feats}; expected >= 1.")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps

    def forward(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            padding_mask: bool ``[N, H, W]``, True on padded cells.

        Returns:
            float32 ``[N, 2 * num_pos_feats, H, W]``.
        """
        valid = (~padding_mask).to(torch.float32)
        y = valid.cumsum(1)
        x = valid.cumsum(2)
        if self.normalize:
            y = y / (y[:, -1:, :] + self.eps) * self.scale
            x = x / (x[:, :, -1:] + self.eps) * self.scale
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=padding_mask.device)
        freq = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = self._interleave(y[..., None] / freq)
        pos_x = self._interleave(x[..., None] / freq)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave(angles: torch.Tensor) -> torch.Tensor:
        """``[N, H, W, d]`` angles -> sin on even channels, cos on odd channels."""
        out = torch.empty_like(angles)
        out[..., 0::2] = angles[..., 0::2].sin()
        out[..., 1::2] = angles[..., 1::2].cos()
        return out
