"""A stack of 3x3 convs shared across pyramid levels, with a separate norm for every level.

Used by the RetinaNet-style proposal generator (sephv9) and the GE ROI heads (gev1), whose
towers follow RetinaNet's head: the conv weights are shared by all levels, the norm
(e.g. EvoNormS0) has its own statistics and affine parameters on each level.
"""
import torch
from torch import nn

from sephnet.backend import Conv2d
from sephnet.layers.norm import build_norm, norm_includes_activation

__all__ = ["SharedConvTower"]


class SharedConvTower(nn.Module):
    """``num_convs`` x (conv 3x3 C -> C shared by all levels, norm of the level, activation).

    ::

        x[N, C, H_l, W_l] --conv_0--> norms[0][l] --act--> ... --conv_{n-1}--> norms[n-1][l]
                          --act--> [N, C, H_l, W_l]

    The convs have a bias only without a norm; the activation is ReLU unless the norm has
    its own non-linearity (EvoNormS0), then none. ``num_convs = 0`` is the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_convs: int,
        num_levels: int,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            channels: C, input and output channels.
            num_convs: number of convs, >= 0.
            num_levels: L, number of levels (one norm per level and conv), >= 1.
            norm: a NORM config value (``""`` = none).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).

        Raises:
            ValueError: a count is out of range.
        """
        super().__init__()
        if num_convs < 0 or num_levels < 1:
            raise ValueError(
                f"SharedConvTower: num_convs={num_convs}, num_levels={num_levels}; expected "
                ">= 0 and >= 1."
            )
        self.num_levels = num_levels
        self.convs = nn.ModuleList(
            Conv2d(channels, channels, kernel_size=3, padding=1, bias=norm == "")
            for _ in range(num_convs)
        )
        self.norms = None
        if norm:
            self.norms = nn.ModuleList(
                nn.ModuleList(
                    build_norm(norm, channels, groups=norm_groups, eps=norm_eps)
                    for _ in range(num_levels)
                )
                for _ in range(num_convs)
            )
        self.activation = None if norm_includes_activation(norm) else nn.ReLU()

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """
        Args:
            x: ``[N, C, H, W]``, a map of level ``level``.
            level: index in [0, L) selecting the norms.

        Returns:
            ``[N, C, H, W]``.
        """
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i][level](x)
            if self.activation is not None:
                x = self.activation(x)
        return x
