"""Multi-level region-of-interest pooling (ROIAlign / ROIAlignV2 / ROIPool over a feature pyramid).

Each box is pooled from one pyramid level chosen by its size (FPN paper, eqn. 1):
``level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))``,
clamped to the available levels. Output rows follow the input box order.
"""

import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from sephnet.d2.layers import ROIAlign, cat, nonzero_tuple, shapes_to_tensor
from sephnet.d2.layers.torchvision_ops import torchvision_ops
from sephnet.d2.structures import Boxes

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"]


def assign_boxes_to_levels(
    box_lists: List[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> torch.Tensor:
    """Pyramid level of every box, as an offset from ``min_level``.

    Args:
        box_lists: N Boxes (one per image); M boxes in total.
        min_level, max_level: smallest / largest available level index (level k has stride 2**k).
        canonical_box_size: box side (sqrt of area, pixels) that maps to ``canonical_level``.
        canonical_level: level of a canonically sized box.

    Returns:
        (M,) int64 tensor in [0, max_level - min_level], boxes in concatenation order.
    """
    box_sizes = torch.sqrt(cat([boxes.area() for boxes in box_lists]))
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: List[Boxes]) -> torch.Tensor:
    """Concatenate per-image boxes into the (M, 5) ``(batch index, x0, y0, x1, y1)`` ROI format.

    Args:
        box_lists: N Boxes, one per image.

    Returns:
        (M, 5) tensor in the boxes' dtype/device; column 0 is the image index as a float.
    """
    boxes = torch.cat([b.tensor for b in box_lists], dim=0)
    # __len__ rather than len(): while tracing it returns the traced size, so the counts
    # follow the input instead of being fixed to the example's
    counts = shapes_to_tensor([b.__len__() for b in box_lists], device=boxes.device)
    batch_idx = torch.repeat_interleave(
        torch.arange(len(box_lists), dtype=boxes.dtype, device=boxes.device), counts
    )
    return cat([batch_idx[:, None], boxes], dim=1)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` rounds halves to even)."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _roi_pool(
    input: torch.Tensor, rois: torch.Tensor, output_size: Tuple[int, int], spatial_scale: float
) -> torch.Tensor:
    """Max pooling over quantised ROI bins, with the semantics of torchvision's ``roi_pool``.

    The ROI corners are scaled and rounded to feature cells (inclusive end), the ROI is split
    into output_size bins with floor/ceil edges, each bin takes the max of its cells, and an
    empty bin (fully outside the map) gives 0.

    Args:
        input: (N, C, H, W) features.
        rois: (R, 5) ``(batch index, x0, y0, x1, y1)`` in image coordinates.
        output_size: (PH, PW).
        spatial_scale: feature-map scale relative to the image (1 / stride).

    Returns:
        (R, C, PH, PW) tensor in the dtype of ``input``.
    """
    ph_n, pw_n = output_size
    num_rois = rois.shape[0]
    _, channels, height, width = input.shape
    out = input.new_zeros((num_rois, channels, ph_n, pw_n))
    if num_rois == 0:
        return out
    # Bin edges are computed in the kernel's scalar type: float64 for double input, else float32.
    edge_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    corners = _round_half_away(rois[:, 1:].to(edge_dtype) * spatial_scale)
    start_w, start_h, end_w, end_h = corners.unbind(dim=1)
    roi_w = torch.clamp(end_w - start_w + 1, min=1)
    roi_h = torch.clamp(end_h - start_h + 1, min=1)
    bin_w = roi_w / pw_n
    bin_h = roi_h / ph_n
    pw = torch.arange(pw_n, dtype=edge_dtype, device=rois.device)
    ph = torch.arange(ph_n, dtype=edge_dtype, device=rois.device)
    w0 = torch.clamp(torch.floor(pw[None] * bin_w[:, None]) + start_w[:, None], 0, width).long()
    w1 = torch.clamp(
        torch.ceil((pw[None] + 1) * bin_w[:, None]) + start_w[:, None], 0, width
    ).long()
    h0 = torch.clamp(torch.floor(ph[None] * bin_h[:, None]) + start_h[:, None], 0, height).long()
    h1 = torch.clamp(
        torch.ceil((ph[None] + 1) * bin_h[:, None]) + start_h[:, None], 0, height
    ).long()

    neg_inf = torch.finfo(input.dtype).min
    batch_idx = rois[:, 0].long()
    for r in range(num_rois):
        empty = (h1[r] <= h0[r])[:, None] | (w1[r] <= w0[r])[None, :]  # (PH, PW)
        if bool(empty.all()):
            continue
        # Only the ROI's own window of the map is needed.
        r0, r1 = int(h0[r].min()), int(h1[r].max())
        c0, c1 = int(w0[r].min()), int(w1[r].max())
        feat = input[batch_idx[r], :, r0:r1, c0:c1]  # (C, h, w)
        cols = torch.arange(c0, c1, device=rois.device)
        rows = torch.arange(r0, r1, device=rois.device)
        col_mask = (cols[None] >= w0[r, :, None]) & (cols[None] < w1[r, :, None])  # (PW, w)
        row_mask = (rows[None] >= h0[r, :, None]) & (rows[None] < h1[r, :, None])  # (PH, h)
        # Max is separable over a rectangle: first over columns within each column bin ...
        per_col_bin = torch.where(col_mask[None, None], feat[:, :, None, :], neg_inf).amax(dim=3)
        # ... then over rows within each row bin: (C, PH, PW).
        pooled = torch.where(row_mask[None, :, :, None], per_col_bin[:, None, :, :], neg_inf).amax(
            dim=2
        )
        out[r] = torch.where(empty[None], torch.zeros((), dtype=input.dtype), pooled)
    return out


class _ROIPool(nn.Module):
    """ROI max pooling (torchvision's ``RoIPool`` when usable, else :func:`_roi_pool`)."""

    def __init__(self, output_size: Tuple[int, int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) features, (R, 5) ROIs -> (R, C, PH, PW)."""
        ops = torchvision_ops()
        if ops is not None:
            return ops.roi_pool(input, rois.to(input.dtype), self.output_size, self.spatial_scale)
        return _roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"


class ROIPooler(nn.Module):
    """Pool a fixed-size feature for every box from a multi-level feature pyramid.

    Args:
        output_size: pooled (H, W), or one int for a square output.
        scales: 1 / stride of each input feature map, from fine to coarse; the strides must be
            consecutive powers of 2 (e.g. 1/4, 1/8, 1/16, 1/32).
        sampling_ratio: ROIAlign samples per bin side (0 = adaptive, ceil(bin size)).
        pooler_type: "ROIAlign" (aligned=False), "ROIAlignV2" (aligned=True, half-pixel
            correction) or "ROIPool" (quantised max pooling).
        canonical_box_size: box side in pixels pooled from ``canonical_level`` (224, after
            ImageNet pre-training, in the FPN paper).
        canonical_level: level index of a canonically sized box (4, stride 16).

    Raises:
        ValueError: unknown pooler type, bad output size, or scales that are not 1 / a power
            of 2 forming a contiguous pyramid.
    """

    def __init__(
        self,
        output_size: Union[int, Sequence[int]],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size):
            raise ValueError(
                f"ROIPooler output_size must be an int or two ints, got {output_size!r}"
            )
        self.output_size = tuple(output_size)

        if pooler_type == "ROIAlign":
            poolers = [
                ROIAlign(
                    self.output_size, spatial_scale=s, sampling_ratio=sampling_ratio, aligned=False
                )
                for s in scales
            ]
        elif pooler_type == "ROIAlignV2":
            poolers = [
                ROIAlign(
                    self.output_size, spatial_scale=s, sampling_ratio=sampling_ratio, aligned=True
                )
                for s in scales
            ]
        elif pooler_type == "ROIPool":
            poolers = [_ROIPool(self.output_size, spatial_scale=s) for s in scales]
        else:
            raise ValueError(
                f"Unknown pooler type: {pooler_type!r}; expected 'ROIAlign', 'ROIAlignV2' or 'ROIPool'"
            )
        self.level_poolers = nn.ModuleList(poolers)

        if len(scales) == 0:
            raise ValueError("ROIPooler needs at least one scale")
        min_level = -math.log2(scales[0])
        max_level = -math.log2(scales[-1])
        if not (
            math.isclose(min_level, round(min_level)) and math.isclose(max_level, round(max_level))
        ):
            raise ValueError(
                f"ROIPooler: featuremap stride is not power of 2! scales={list(scales)}"
            )
        self.min_level = int(round(min_level))
        self.max_level = int(round(max_level))
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError(
                f"ROIPooler: sizes of input featuremaps do not form a pyramid! scales={list(scales)}"
            )
        if not 0 <= self.min_level <= self.max_level:
            raise ValueError(f"ROIPooler: scales must be <= 1 and decreasing, got {list(scales)}")
        if canonical_box_size <= 0:
            raise ValueError(f"ROIPooler canonical_box_size must be > 0, got {canonical_box_size}")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """Pool every box from its level.

        Args:
            x: L feature maps (N, C, Hl, Wl), matching ``scales``.
            box_lists: N Boxes in input-image coordinates; M boxes in total.

        Returns:
            (M, C, PH, PW) tensor, row i for the i-th box of the concatenated box lists.

        Raises:
            TypeError: if ``x`` or ``box_lists`` is not a list.
            ValueError: if the number of feature maps or images does not match.
        """
        if not isinstance(x, list) or not isinstance(box_lists, list):
            raise TypeError("Arguments to pooler must be lists")
        if len(x) != len(self.level_poolers):
            raise ValueError(
                f"unequal value, num_level_assignments={len(self.level_poolers)}, "
                f"but x is list of {len(x)} Tensors"
            )
        if len(box_lists) != x[0].size(0):
            raise ValueError(
                f"unequal value, x[0] batch dim 0 is {x[0].size(0)}, "
                f"but box_list has length {len(box_lists)}"
            )
        if len(box_lists) == 0:
            return torch.zeros(
                (0, x[0].shape[1]) + self.output_size, device=x[0].device, dtype=x[0].dtype
            )

        rois = convert_boxes_to_pooler_format(box_lists)
        if len(self.level_poolers) == 1:
            return self.level_poolers[0](x[0], rois)

        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        output = x[0].new_zeros((rois.size(0), x[0].shape[1]) + self.output_size)
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(levels == level)[0]
            output.index_put_((inds,), pooler(x[level], rois[inds]))
        return output
