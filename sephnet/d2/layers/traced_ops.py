"""The pure-PyTorch ``nms`` and ``roi_align`` as registered operators, for tracing.

torchvision's kernels are dispatcher operators (``torchvision::nms``, ``torchvision::roi_align``),
so ``torch.jit.trace`` and the ONNX exporter record each call as one node, whatever the number of
boxes. The portable implementations are Python code whose loops depend on the data; traced
as they are, they would be unrolled for the boxes of the example input only. Registered here as
``sephnet_d2::nms`` and ``sephnet_d2::roi_align``, they trace as single nodes the same way, and
:mod:`.nms` / :mod:`.roi_align` call them only while tracing (eager calls take the plain
functions, which keep autograd). A traced model that contains them needs ``sephnet.d2`` imported
to run; exporters map them onto their own operators (ONNX: ``NonMaxSuppression``, ``RoiAlign``).
"""
from typing import List

import torch

__all__ = ["traced_nms", "traced_roi_align"]


@torch.library.custom_op("sephnet_d2::nms", mutates_args=())
def traced_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`sephnet.d2.layers.nms.nms` as one operator (int64 Tensor[K] of kept indices)."""
    from .nms import _nms_pytorch

    return _nms_pytorch(boxes, scores, iou_threshold)


@traced_nms.register_fake
def _traced_nms_shape(boxes, scores, iou_threshold):
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.custom_op("sephnet_d2::roi_align", mutates_args=())
def traced_roi_align(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float,
                     output_size: List[int], sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """ROIAlign of ``rois`` (Tensor[K, 5]: batch index, x1, y1, x2, y2) as one operator."""
    from .roi_align import _roi_align_pytorch

    return _roi_align_pytorch(input, rois, tuple(output_size), spatial_scale, sampling_ratio,
                              aligned)


@traced_roi_align.register_fake
def _traced_roi_align_shape(input, rois, spatial_scale, output_size, sampling_ratio, aligned):
    return input.new_empty((rois.shape[0], input.shape[1], *output_size))
