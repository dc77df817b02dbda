"""Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan 2020).

Registered in ``SEPH_NORM_REGISTRY`` as ``"FRN"``, so every sephnet ``NORM`` key that
accepts EvoNormS0 accepts it too. For each sample n and channel c, over the H x W positions::

    nu2 = mean_{h,w} x^2
    y   = gamma * x / sqrt(nu2 + eps) + beta
    z   = max(y, tau)                     (TLU)

No mean is subtracted and nothing is shared across samples or channels: like EvoNormS0 the
layer is batch-independent and has no running statistics. TLU is its non-linearity, so
heads append no ReLU after it.
"""
import torch
from torch import nn

from sephnet.modeling.registry import SEPH_NORM_REGISTRY

__all__ = ["FRN"]


@SEPH_NORM_REGISTRY.register()
class FRN(nn.Module):
    """FRN + TLU over ``[N, C, H, W]`` maps with per-channel gamma (1), beta (0), tau (0).

    On a 1 x 1 map ``x / sqrt(x^2 + eps)`` is about the sign of x (the paper adds a learned
    epsilon there, which sephnet does not offer). Coarse pyramid levels of small images may
    be 1 x 1 and are computed as the formula says; FC layers, always 1 x 1, refuse FRN
    (``needs_spatial_extent``, read by :class:`~sephnet.layers.blocks.FCNormAct`).
    """

    # Read by norm_includes_activation: heads append no ReLU after this layer.
    includes_activation = True
    # Read by the config checks: FRN normalises each channel alone (no channel groups).
    uses_groups = False
    # Read by FCNormAct: an FC output has no H x W to take statistics over.
    needs_spatial_extent = True

    def __init__(self, num_channels: int, *, groups: int = 1, eps: float = 1e-6):
        """
        Args:
            num_channels: C.
            groups: accepted for the ``SEPH_NORM_REGISTRY`` contract; not used (FRN has no
                channel groups).
            eps: added to the mean square; from ``MODEL.SEPH.EVONORM.EPS`` when built from
                a config (the paper uses 1e-6).

        Raises:
            ValueError: ``num_channels`` <= 0 or ``eps`` < 0.
        """
        super().__init__()
        del groups
        if num_channels <= 0:
            raise ValueError(f"FRN: num_channels must be positive, got {num_channels}.")
        if eps < 0:
            raise ValueError(f"FRN: eps must be >= 0, got {eps}.")
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.tau = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]``; N may be 0.

        Returns:
            A tensor of ``x``'s shape and dtype.
        """
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"FRN: expected input [N, {self.num_channels}, H, W], got {list(x.shape)}."
            )
        shape = (1, self.num_channels, 1, 1)
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        y = x / torch.sqrt(nu2 + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return torch.max(y, self.tau.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"
