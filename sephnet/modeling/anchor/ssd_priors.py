"""SSD's prior (default) boxes (Liu et al. 2016, section 2.2 "Choosing scales and aspect
ratios for default boxes"; sizes as mmdetection's SSD300 / SSD512 COCO configs).

At every location of level ``l`` (an ``H_l x W_l`` map) there are ``2 + 2 * len(r_l)``
boxes, all centred on ``((x + offset) * stride_l, (y + offset) * stride_l)``, in this order::

    min_l x min_l                                 (square, the level's scale)
    sqrt(min_l * max_l) x sqrt(min_l * max_l)     (the paper's extra square, s'_k)
    for r in r_l:  min_l*sqrt(r) x min_l/sqrt(r),  min_l/sqrt(r) x min_l*sqrt(r)   (w x h)

Boxes are in input pixels (the network's square input), XYXY, listed location by location
(row-major) and, at each location, in the order above; levels follow each other. This is
the order in which :class:`~sephnet.modeling.meta_arch.ssd_head.SSDHead` lays out its
predictions, so prior ``i`` and prediction ``i`` belong together.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

__all__ = ["SSDPriorGenerator", "num_priors_per_location"]


def num_priors_per_location(aspect_ratios: Sequence[float]) -> int:
    """Boxes per location of a level with these aspect ratios: two squares + a pair per ratio."""
    return 2 + 2 * len(aspect_ratios)


class SSDPriorGenerator(nn.Module):
    """Prior boxes of every level, from the levels' feature-map sizes.

    It holds no tensors (nothing in a checkpoint) and nothing is cached: the priors are a
    function of the feature sizes given at each call.
    """

    def __init__(
        self,
        *,
        min_sizes: Sequence[float],
        max_sizes: Sequence[float],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[float],
        offset: float = 0.5,
        clip_size: float = 0.0,
    ):
        """
        Args:
            min_sizes, max_sizes: per level (L entries), the side of the small square and,
                with it, of the extra square sqrt(min * max); 0 < min <= max.
            aspect_ratios: per level, the ratios r > 0 (r != 1) of the rectangle pairs.
            strides: per level, the distance in input pixels between neighbouring centres.
            offset: centres sit at ``(index + offset) * stride``.
            clip_size: when > 0, clip boxes to ``[0, clip_size]`` (the square input's side);
                0 keeps boxes crossing the image border as they are.
        """
        super().__init__()
        levels = len(min_sizes)
        if not (len(max_sizes) == len(aspect_ratios) == len(strides) == levels) or levels == 0:
            raise ValueError(
                f"SSD priors need one min size, max size, aspect-ratio list and stride per level; "
                f"got {len(min_sizes)}, {len(max_sizes)}, {len(aspect_ratios)}, {len(strides)}."
            )
        for lo, hi in zip(min_sizes, max_sizes):
            if not 0 < lo <= hi:
                raise ValueError(f"SSD prior sizes need 0 < min <= max; got min {lo}, max {hi}.")
        for ratios in aspect_ratios:
            if any(r <= 0 or r == 1 for r in ratios):
                raise ValueError(f"SSD prior aspect ratios must be > 0 and != 1; got {list(ratios)}.")
        self.min_sizes = [float(s) for s in min_sizes]
        self.max_sizes = [float(s) for s in max_sizes]
        self.aspect_ratios = [[float(r) for r in ratios] for ratios in aspect_ratios]
        self.strides = [float(s) for s in strides]
        self.offset = float(offset)
        self.clip_size = float(clip_size)

    @property
    def num_priors_per_location(self) -> List[int]:
        """A_l for every level."""
        return [num_priors_per_location(r) for r in self.aspect_ratios]

    def cell_sizes(self, level: int) -> torch.Tensor:
        """``(A_l, 2)`` float64 (w, h) of the boxes at one location of ``level``, in order."""
        small, large = self.min_sizes[level], self.max_sizes[level]
        sizes = [(small, small), (math.sqrt(small * large),) * 2]
        for r in self.aspect_ratios[level]:
            root = math.sqrt(r)
            sizes += [(small * root, small / root), (small / root, small * root)]
        return torch.tensor(sizes, dtype=torch.float64)

    def forward(self, feature_sizes: Sequence[Tuple[int, int]], device=None) -> List[torch.Tensor]:
        """
        Args:
            feature_sizes: L ``(H_l, W_l)`` pairs, finest level first.
            device: where to put the priors.

        Returns:
            L float32 tensors ``(H_l * W_l * A_l, 4)``: XYXY priors in input pixels.
        """
        if len(feature_sizes) != len(self.min_sizes):
            raise ValueError(
                f"SSD priors are configured for {len(self.min_sizes)} levels; got "
                f"{len(feature_sizes)} feature maps."
            )
        priors = []
        for level, (height, width) in enumerate(feature_sizes):
            stride = self.strides[level]
            ys = (torch.arange(height, dtype=torch.float64) + self.offset) * stride
            xs = (torch.arange(width, dtype=torch.float64) + self.offset) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (H*W, 1, 2)
            half = self.cell_sizes(level)[None] / 2  # (1, A, 2)
            boxes = torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)
            if self.clip_size > 0:
                boxes = boxes.clamp(0.0, self.clip_size)
            priors.append(boxes.to(device=device, dtype=torch.float32))
        return priors
