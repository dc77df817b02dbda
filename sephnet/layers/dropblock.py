"""DropBlock (Ghiasi, Lin & Le 2018): dropout of contiguous square regions of a feature map.

In training, for a map of H x W and block size b (clipped to the map), block centres are
drawn independently per sample and channel with probability::

    gamma = drop_prob / b^2 * (H * W) / ((H - b + 1) * (W - b + 1))

among the (H - b + 1) x (W - b + 1) positions where a whole block fits; every b x b block
around a drawn seed is zeroed, and the output is rescaled by ``#units / #kept units`` (over
the whole tensor) so its expected sum is unchanged. ``gamma`` is the paper's: without
overlaps a unit would be dropped with probability ``drop_prob``; overlapping blocks make it
slightly less. In evaluation, or with ``drop_prob = 0``, the layer is the identity.

With ``ramp_iters > 0`` the drop probability grows linearly over training, as the paper
recommends: at iteration i (0-based, read from the current EventStorage) it is
``drop_prob * min(1, (i + 1) / ramp_iters)``. Being a function of the iteration, it resumes
exactly.
"""
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import get_event_storage

__all__ = ["DropBlock2d", "dropblock_gamma"]


def dropblock_gamma(drop_prob: float, block_size: int, height: int, width: int) -> float:
    """The seed probability of the module docstring (``block_size`` already <= H and W)."""
    b = block_size
    return drop_prob / (b * b) * (height * width) / ((height - b + 1) * (width - b + 1))


class DropBlock2d(nn.Module):
    """DropBlock on ``[N, C, H, W]`` maps; no parameters, no state (RNG: torch's global one).

    With ``ramp_iters > 0`` a training forward needs an EventStorage (the iteration).
    """

    def __init__(self, *, drop_prob: float, block_size: int, ramp_iters: int = 0):
        """
        Args:
            drop_prob: target fraction of dropped units, in [0, 1).
            block_size: b, the side of the dropped squares, an int >= 1 (clipped to the
                map's H and W at run time).
            ramp_iters: iterations over which the drop probability rises linearly from
                ``drop_prob / ramp_iters`` to ``drop_prob``, an int >= 0; 0 = constant.

        Raises:
            ValueError: a value out of range.
        """
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropBlock2d: drop_prob={drop_prob!r}; expected a number in [0, 1).")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"DropBlock2d: block_size={block_size!r}; expected an int >= 1.")
        if isinstance(ramp_iters, bool) or not isinstance(ramp_iters, int) or ramp_iters < 0:
            raise ValueError(f"DropBlock2d: ramp_iters={ramp_iters!r}; expected an int >= 0.")
        self.drop_prob = float(drop_prob)
        self.block_size = block_size
        self.ramp_iters = ramp_iters

    def current_drop_prob(self) -> float:
        """The drop probability of this iteration (``drop_prob`` without a ramp)."""
        if self.ramp_iters == 0:
            return self.drop_prob
        step = get_event_storage().iter + 1
        return self.drop_prob * min(1.0, step / self.ramp_iters)

    def block_mask(self, x: torch.Tensor, drop_prob: float) -> torch.Tensor:
        """A keep-mask for ``x`` (1 = kept, 0 = dropped), ``[N, C, H, W]`` in x's dtype."""
        n, c, h, w = x.shape
        b = min(self.block_size, h, w)
        gamma = dropblock_gamma(drop_prob, b, h, w)
        seeds = torch.bernoulli(
            torch.full((n, c, h - b + 1, w - b + 1), gamma, dtype=x.dtype, device=x.device)
        )
        # A seed at valid position (i, j) covers rows i..i+b-1 and columns j..j+b-1: pad
        # b - 1 zeros on every side and take the b x b max (stride 1) to get an H x W map.
        dropped = F.max_pool2d(F.pad(seeds, [b - 1] * 4), kernel_size=b, stride=1)
        return 1.0 - dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]``; N may be 0.

        Returns:
            A tensor of ``x``'s shape.
        """
        if x.dim() != 4:
            raise ValueError(f"DropBlock2d: expected input [N, C, H, W], got {list(x.shape)}.")
        if not self.training or self.drop_prob == 0.0 or x.numel() == 0:
            return x
        mask = self.block_mask(x, self.current_drop_prob())
        return x * mask * (mask.numel() / mask.sum().clamp(min=1.0))

    def extra_repr(self) -> str:
        return (
            f"drop_prob={self.drop_prob}, block_size={self.block_size}, "
            f"ramp_iters={self.ramp_iters}"
        )
