"""Anchor generators: dense sets of reference boxes tiled over each feature map.

Anchor layout of one level (stride s, offset o, feature map H x W, A cell anchors):
index ``(y * W + x) * A + a`` holds cell anchor ``a`` shifted to
``(o*s + x*s, o*s + y*s)``. Cell anchors are ordered size-major, aspect-ratio-minor.
"""

import collections.abc
import math
from typing import Iterator, List, Sequence, Tuple

import torch
from torch import nn

from sephnet.d2.config import configurable
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.structures import Boxes
from sephnet.d2.utils.registry import Registry

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "BufferList",
    "DefaultAnchorGenerator",
    "build_anchor_generator",
]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Anchor generators for dense detection heads.

A registered class is called as ``obj(cfg, input_shape)`` with ``input_shape`` the list of
ShapeSpec of the feature maps it will tile.
"""


class BufferList(nn.Module):
    """A list of tensors registered as *non-persistent* buffers named "0", "1", ...

    They follow ``.to()``/``.cuda()`` with the module but are not written to ``state_dict``,
    so checkpoints do not depend on anchor settings.
    """

    def __init__(self, buffers: Sequence[torch.Tensor]):
        super().__init__()
        for i, buf in enumerate(buffers):
            self.register_buffer(str(i), buf, persistent=False)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._buffers.values())


def _create_grid_offsets(
    size: Sequence[int], stride: int, offset: float, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres of an (H, W) grid, flattened row-major: returns (shift_x, shift_y), each (H*W,)."""
    # no int(): while tracing the sizes are traced values, and the grid must follow them
    grid_h, grid_w = size[0], size[1]
    xs = torch.arange(
        offset * stride, grid_w * stride, step=stride, dtype=torch.float32, device=device
    )
    ys = torch.arange(
        offset * stride, grid_h * stride, step=stride, dtype=torch.float32, device=device
    )
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def _broadcast_params(params, num_features: int, name: str) -> List[List[float]]:
    """Expand ``params`` (list[float] or list[list[float]]) to one list per feature map.

    A flat list, or a nested list with a single entry, is repeated for every feature map;
    otherwise there must be exactly one entry per feature map.
    """
    if not isinstance(params, collections.abc.Sequence) or isinstance(params, str):
        raise TypeError(f"{name} in anchor generator has to be a list! Got {params!r}.")
    if len(params) == 0:
        raise ValueError(f"The anchor generator's {name} is empty.")
    if not isinstance(params[0], collections.abc.Sequence):
        return [list(params)] * num_features
    if len(params) == 1:
        return [list(params[0])] * num_features
    if len(params) != num_features:
        raise ValueError(
            f"The anchor generator has {len(params)} entries of {name} "
            f"for {num_features} input features."
        )
    return [list(p) for p in params]


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    """Axis-aligned anchors of given sizes and aspect ratios at every feature-map location.

    Args (keyword-only):
        sizes: anchor sizes (sqrt of area, in input-image pixels), one list per feature map,
            or a single list used for all feature maps.
        aspect_ratios: anchor height / width ratios, broadcast the same way as ``sizes``.
        strides: stride (in pixels) of each feature map.
        offset: centre of the first anchor relative to the image corner, in units of the
            stride; must be in [0, 1).
    """

    box_dim: int = 4
    """Number of coordinates per anchor (XYXY)."""

    @configurable
    def __init__(
        self,
        *,
        sizes,
        aspect_ratios,
        strides: List[int],
        offset: float = 0.5,
    ):
        super().__init__()
        self.strides = strides
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        self.cell_anchors = self._calculate_anchors(sizes, aspect_ratios)

        if not 0.0 <= offset < 1.0:
            raise ValueError(f"Anchor generator offset must be in [0, 1), got {offset}")
        self.offset = offset

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        return {
            "sizes": cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            "strides": [s.stride for s in input_shape],
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    def _calculate_anchors(self, sizes, aspect_ratios) -> BufferList:
        return BufferList(
            [self.generate_cell_anchors(s, a).float() for s, a in zip(sizes, aspect_ratios)]
        )

    @property
    def num_cell_anchors(self) -> List[int]:
        """Alias of :attr:`num_anchors`."""
        return self.num_anchors

    @property
    def num_anchors(self) -> List[int]:
        """Number of anchors per location (len(sizes) * len(aspect_ratios)) for each feature map."""
        return [len(cell) for cell in self.cell_anchors]

    def _grid_anchors(self, grid_sizes: List[Sequence[int]]) -> List[torch.Tensor]:
        """One (H*W*A, 4) tensor per feature map: every cell anchor at every grid location."""
        out = []
        for size, stride, cell in zip(grid_sizes, self.strides, self.cell_anchors):
            shift_x, shift_y = _create_grid_offsets(size, stride, self.offset, cell.device)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            out.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4))
        return out

    def generate_cell_anchors(
        self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)
    ) -> torch.Tensor:
        """Anchors centred at (0, 0): (len(sizes) * len(aspect_ratios), 4) XYXY tensor.

        For size s and ratio r the box has area s**2 and h / w = r, i.e. w = sqrt(s**2 / r),
        h = r * w. Rows are ordered by size, then by aspect ratio. (Unlike Detectron1's
        generator there is no quantisation and no half-pixel shift.)
        """
        rows = []
        for size in sizes:
            area = size**2.0
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(rows)

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """Anchors for a list of L feature maps (only their trailing H, W are used).

        Args:
            features: L tensors of shape (N, C, Hl, Wl).

        Returns:
            L Boxes, level l holding (Hl * Wl * A_l, 4) float32 anchors on the features' device
            (the device of the cell-anchor buffers).
        """
        grid_sizes = [f.shape[-2:] for f in features]
        return [Boxes(a) for a in self._grid_anchors(grid_sizes)]


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Build the anchor generator named by ``cfg.MODEL.ANCHOR_GENERATOR.NAME``."""
    return ANCHOR_GENERATOR_REGISTRY.get(cfg.MODEL.ANCHOR_GENERATOR.NAME)(cfg, input_shape)
