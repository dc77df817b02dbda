"""ROIAlign (He et al., Mask R-CNN) with torchvision's exact sampling semantics.

For ROI k = (b, x1, y1, x2, y2) in image coordinates, with ``o = 0.5`` if ``aligned`` else 0:

* the ROI in feature coordinates starts at ``(x1 * spatial_scale - o, y1 * spatial_scale - o)``
  and has size ``(x2 - x1, y2 - y1) * spatial_scale`` (computed as end - start); with
  ``aligned=False`` the size is clamped to at least 1 (Detectron's legacy behaviour);
* it is cut into ``PH x PW`` bins of size ``roi_size / output_size``;
* each bin averages ``gh x gw`` bilinear samples placed at the centres of a regular
  sub-grid, where ``g = sampling_ratio`` if it is > 0, else ``ceil(roi_size / output_size)``
  (adaptive: it differs per ROI; a non-positive count gives an all-zero bin);
* a sample at (y, x) outside ``[-1, H] x [-1, W]`` contributes 0 (it still counts in the
  average); otherwise negative coordinates are clamped to 0 and at the last row/column the
  interpolation uses that row/column alone.

The PyTorch implementation (used when torchvision's compiled op is unusable) is
vectorised: bilinear interpolation is separable, so the y and x sample positions, corner
indices and weights are computed once per (ROI, bin row, sub-row) and per (ROI, bin column,
sub-column); every (sample, corner) pair then becomes one entry of a sparse CSR matrix with
one row per output bin and one column per feature-map pixel, and the whole op is a single
sparse x dense product with the channels-last feature map. Autograd differentiates that
product w.r.t. the features. ROIs are processed in chunks that bound the matrix size.
"""
from typing import List, Sequence, Tuple, Union
import warnings

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .torchvision_ops import torchvision_ops
from .traced_ops import traced_roi_align

__all__ = ["roi_align", "ROIAlign"]

_MAX_ENTRIES_PER_CHUNK = 1 << 22  # sparse entries built at once (about 50 MB of indices+weights)


def _rois_from_boxes(boxes: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """Accept Tensor[K, 5] or a per-image list of Tensor[L_i, 4]; return Tensor[K, 5]."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"roi_align: rois must have shape [K, 5] (batch_idx, x1, y1, x2, y2), got {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"roi_align: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    for per_image in boxes:
        if per_image.dim() != 2 or per_image.shape[1] != 4:
            raise ValueError(f"roi_align: each per-image box tensor must be [L, 4], got {tuple(per_image.shape)}")
    concat = torch.cat(list(boxes), dim=0)
    batch_idx = torch.cat(
        [torch.full((len(b), 1), i, dtype=concat.dtype, device=concat.device) for i, b in enumerate(boxes)]
    )
    return torch.cat([batch_idx, concat], dim=1)


def _axis_samples(
    start: torch.Tensor, size: torch.Tensor, grid: torch.Tensor, bins: int, length: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bilinear corner indices and weights along one axis for every (ROI, bin, sub-sample).

    Args:
        start, size: Tensor[K] ROI start and size in feature coordinates (compute dtype).
        grid: int64 Tensor[K], sub-samples per bin (>= 0).
        bins: number of output bins along this axis.
        length: feature-map extent along this axis (H or W).

    Returns:
        (indices, weights), each Tensor[L, 2] with L = sum_k bins * grid[k], rows ordered
        by (ROI, bin, sub-sample): the two pixel indices (int64, low then high) that a
        sample interpolates between and their weights, already 0 for a sample outside
        ``[-1, length]``.
    """
    per_roi = grid * bins
    owner = torch.repeat_interleave(torch.arange(len(start), device=start.device), per_roi)
    first = torch.cumsum(per_roi, 0) - per_roi
    local = torch.arange(len(owner), device=start.device) - first[owner]
    g = grid[owner]
    bin_idx = torch.div(local, g, rounding_mode="floor")
    sub_idx = local - bin_idx * g
    dtype = start.dtype
    bin_size = size[owner] / bins
    # Same operation order as torchvision's kernel: start + bin*bin_size + (sub+0.5)*bin_size/g.
    pos = start[owner] + bin_idx.to(dtype) * bin_size + (sub_idx.to(dtype) + 0.5) * bin_size / g.to(dtype)
    inside = (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor()
    at_last = low >= length - 1
    low = torch.where(at_last, torch.full_like(low, length - 1), low)
    pos = torch.where(at_last, low, pos)
    frac = pos - low
    w_high = torch.where(inside, frac, torch.zeros_like(frac))
    w_low = torch.where(inside, 1.0 - frac, torch.zeros_like(frac))
    low_idx = low.long()
    high_idx = torch.where(at_last, low_idx, low_idx + 1)
    return torch.stack([low_idx, high_idx], dim=1), torch.stack([w_low, w_high], dim=1)


def _roi_align_chunk(
    feats: torch.Tensor,
    batch: torch.Tensor,
    start_h: torch.Tensor,
    start_w: torch.Tensor,
    roi_h: torch.Tensor,
    roi_w: torch.Tensor,
    grid_h: torch.Tensor,
    grid_w: torch.Tensor,
    feat_hw: Tuple[int, int],
    output_size: Tuple[int, int],
) -> torch.Tensor:
    """ROIAlign for a chunk of ROIs as one sparse x dense product.

    Args:
        feats: Tensor[N*H*W, C], the channels-last feature map.
        batch: int64 Tensor[K]; the other per-ROI tensors are Tensor[K] as well.
        feat_hw: (H, W); output_size: (PH, PW).

    Returns:
        Tensor[K * PH * PW, C], rows ordered by (ROI, bin row, bin column).
    """
    height, width = feat_hw
    out_h, out_w = output_size
    device = feats.device
    y_idx, y_w = _axis_samples(start_h, roi_h, grid_h, out_h, height)
    x_idx, x_w = _axis_samples(start_w, roi_w, grid_w, out_w, width)

    # Per output bin (ROI k, bin row r, bin column c): where its sub-rows/sub-columns
    # start in the axis tables, and its sample-grid width.
    num_bins = out_h * out_w
    per_bin = grid_h * grid_w
    bin_row = torch.arange(out_h, device=device).repeat_interleave(out_w)
    bin_col = torch.arange(out_w, device=device).repeat(out_h)
    y_first = torch.cumsum(grid_h * out_h, 0) - grid_h * out_h
    x_first = torch.cumsum(grid_w * out_w, 0) - grid_w * out_w
    bin_y0 = (y_first[:, None] + bin_row[None, :] * grid_h[:, None]).reshape(-1)
    bin_x0 = (x_first[:, None] + bin_col[None, :] * grid_w[:, None]).reshape(-1)
    bin_gw = grid_w.repeat_interleave(num_bins)
    bin_count = per_bin.repeat_interleave(num_bins)
    bin_base = (batch * (height * width)).repeat_interleave(num_bins)

    # Per sample, ordered by (bin, sub-row, sub-column).
    owner = torch.repeat_interleave(torch.arange(len(bin_count), device=device), bin_count)
    within = torch.arange(len(owner), device=device) - (torch.cumsum(bin_count, 0) - bin_count)[owner]
    gw = bin_gw[owner]
    sub_row = torch.div(within, gw, rounding_mode="floor")
    yi = bin_y0[owner] + sub_row
    xi = bin_x0[owner] + (within - sub_row * gw)

    # The 4 corners of each sample are the outer product of its 2 rows and 2 columns.
    rows = y_idx[yi] * width + bin_base[owner][:, None]
    columns = (rows[:, :, None] + x_idx[xi][:, None, :]).reshape(-1)
    weights = (y_w[yi][:, :, None] * x_w[xi][:, None, :]).reshape(-1)

    crow = torch.cat([bin_count.new_zeros(1), torch.cumsum(4 * bin_count, 0)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        matrix = torch.sparse_csr_tensor(
            crow, columns, weights, size=(len(bin_count), feats.shape[0]), check_invariants=False
        )
        pooled = torch.sparse.mm(matrix, feats)
    return pooled / bin_count.clamp(min=1).to(pooled.dtype)[:, None]


def _roi_align_pytorch(*args) -> torch.Tensor:
    """Vectorised PyTorch ROIAlign; same contract as :func:`roi_align`. Like torchvision's
    kernel under autocast, it computes in float32 (autocast off) and returns the input dtype."""
    with torch.autocast(args[0].device.type, enabled=False):
        return _roi_align_float(*args)


def _roi_align_float(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    num_images, channels, height, width = input.shape
    out_h, out_w = output_size
    compute_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    feats = input.to(compute_dtype).permute(0, 2, 3, 1).reshape(num_images * height * width, channels)
    rois = rois.to(device=input.device, dtype=compute_dtype)
    batch = rois[:, 0].long()
    if len(rois) and (int(batch.min()) < 0 or int(batch.max()) >= num_images):
        raise ValueError(f"roi_align: ROI batch indices must lie in [0, {num_images}), got {batch.unique().tolist()}")

    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * spatial_scale - offset
    start_h = rois[:, 2] * spatial_scale - offset
    roi_w = (rois[:, 3] * spatial_scale - offset) - start_w
    roi_h = (rois[:, 4] * spatial_scale - offset) - start_h
    if not aligned:  # legacy Detectron: never smaller than one pixel
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(batch, sampling_ratio)
        grid_w = torch.full_like(batch, sampling_ratio)
    else:
        grid_h = torch.ceil(roi_h / out_h).long().clamp(min=0)
        grid_w = torch.ceil(roi_w / out_w).long().clamp(min=0)

    entries = torch.cumsum(grid_h * grid_w * (4 * out_h * out_w), 0)
    pieces: List[torch.Tensor] = []
    start = 0
    while start < len(rois) or not pieces:
        done = int(entries[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(entries, done + _MAX_ENTRIES_PER_CHUNK, right=True))
        stop = min(max(stop, start + 1), len(rois))
        part = slice(start, stop)
        pieces.append(
            _roi_align_chunk(
                feats, batch[part], start_h[part], start_w[part], roi_h[part], roi_w[part],
                grid_h[part], grid_w[part], (height, width), (out_h, out_w),
            )
        )
        start = stop
    pooled = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    out = pooled.view(len(rois), out_h, out_w, channels).permute(0, 3, 1, 2).contiguous()
    return out.to(input.dtype)


def roi_align(
    input: torch.Tensor,
    boxes: Union[torch.Tensor, List[torch.Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """ROIAlign (``torchvision.ops.roi_align``; detectron2 re-exports it under this name).

    Args:
        input: Tensor[N, C, H, W] feature map.
        boxes: Tensor[K, 5] rows (batch_index, x1, y1, x2, y2) in image coordinates, or a
            list of N Tensor[L_i, 4] per-image boxes. Same dtype as ``input``.
        output_size: (PH, PW) or an int for a square output.
        spatial_scale: feature-map size / image size (e.g. 1/16).
        sampling_ratio: samples per bin side; <= 0 means adaptive ``ceil(roi_size / bins)``.
        aligned: shift the ROI by -0.5 pixel so that bilinear sampling matches the
            pixel-centre model (detectron2's ``ROIAlign`` defaults to True).

    Returns:
        Tensor[K, C, PH, PW], differentiable w.r.t. ``input``.
    """
    output_size = _pair(output_size)
    ops = torchvision_ops()
    if ops is not None:
        return ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be NCHW, got shape {tuple(input.shape)}")
    if torch.jit.is_tracing():
        return traced_roi_align(input, _rois_from_boxes(boxes), float(spatial_scale),
                                list(output_size), int(sampling_ratio), bool(aligned))
    return _roi_align_pytorch(input, _rois_from_boxes(boxes), output_size, spatial_scale, int(sampling_ratio), aligned)


class ROIAlign(nn.Module):
    """Module form of :func:`roi_align`; note the default ``aligned=True`` (torchvision's
    ``RoIAlign`` defaults to False).

    Args:
        output_size: (PH, PW) or int.
        spatial_scale: feature-map size / image size.
        sampling_ratio: samples per bin side; 0 (or less) for adaptive sampling.
        aligned: True for the half-pixel-corrected ROIAlign, False for Detectron's legacy
            version (ROI sizes clamped to >= 1, no shift).
    """

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool = True):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: Tensor[N, C, H, W].
            rois: Tensor[K, 5] rows (batch_index, x1, y1, x2, y2).

        Returns:
            Tensor[K, C, PH, PW].
        """
        if rois.dim() != 2 or rois.size(1) != 5:
            raise ValueError(f"ROIAlign: rois must have shape [K, 5], got {tuple(rois.shape)}")
        if input.is_quantized:
            input = input.dequantize()
        return roi_align(
            input, rois.to(dtype=input.dtype), self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )
