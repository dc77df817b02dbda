"""SSD's multibox head (Liu et al. 2016, section 2.1 "Convolutional predictors for detection").

::

    level l feature (N, C_l, H_l, W_l) -> 3x3 conv -> class logits (N, A_l * (K + 1), H_l, W_l)
                                       -> 3x3 conv -> box deltas   (N, A_l * 4,       H_l, W_l)

One pair of convs per level (no sharing: levels differ in width and in A_l). Outputs of all
levels are flattened location by location, then prior by prior, and concatenated, in the
order of :class:`~sephnet.modeling.anchor.ssd_priors.SSDPriorGenerator`'s priors.
"""
from typing import List, Sequence, Tuple

import torch
from torch import nn

__all__ = ["SSDHead"]


def _flatten(x: torch.Tensor, per_prior: int) -> torch.Tensor:
    """``(N, A * D, H, W)`` -> ``(N, H * W * A, D)``."""
    n, _, h, w = x.shape
    return x.view(n, -1, per_prior, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_prior)


class SSDHead(nn.Module):
    """Per-level class and box convolutions; ``K + 1`` classes, background last (index K)."""

    def __init__(self, *, in_channels: Sequence[int], num_priors: Sequence[int], num_classes: int):
        """
        Args:
            in_channels: C_l of every level.
            num_priors: A_l, the priors per location of every level.
            num_classes: K, the foreground classes.
        """
        super().__init__()
        if len(in_channels) != len(num_priors):
            raise ValueError(
                f"SSDHead: {len(in_channels)} feature levels but prior counts for {len(num_priors)}."
            )
        self.num_classes = num_classes
        self.cls_convs = nn.ModuleList(
            nn.Conv2d(c, a * (num_classes + 1), kernel_size=3, padding=1)
            for c, a in zip(in_channels, num_priors)
        )
        self.box_convs = nn.ModuleList(
            nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in zip(in_channels, num_priors)
        )
        for conv in list(self.cls_convs) + list(self.box_convs):  # as mmdetection's SSD
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            features: L maps ``(N, C_l, H_l, W_l)``.

        Returns:
            cls_logits: ``(N, P, K + 1)``, P = sum of H_l * W_l * A_l.
            box_deltas: ``(N, P, 4)``, encoded against the priors.
        """
        cls_logits = [_flatten(conv(x), self.num_classes + 1) for conv, x in zip(self.cls_convs, features)]
        box_deltas = [_flatten(conv(x), 4) for conv, x in zip(self.box_convs, features)]
        return torch.cat(cls_logits, dim=1), torch.cat(box_deltas, dim=1)
