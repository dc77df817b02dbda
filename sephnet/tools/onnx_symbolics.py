"""ONNX translations of the core's traced operators (``sephnet_d2::nms``, ``sephnet_d2::roi_align``).

With torchvision's kernels the traced graph holds ``torchvision::nms`` / ``torchvision::roi_align``
and torchvision registers their ONNX forms itself. The portable core traces its own operators
instead (``sephnet.d2.layers.traced_ops``); :func:`register_onnx_symbolics` maps them onto the
standard ONNX operators, for the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``):

* ``nms(boxes[N, 4], scores[N], t)`` -> ``NonMaxSuppression`` on one batch and one class (boxes
  (1, N, 4), scores (1, 1, N), no box limit, IoU threshold t), keeping the box-index column;
  ONNX suppresses IoU > t and returns the kept boxes by decreasing score, as torchvision does.
* ``roi_align(x, rois[K, 5], scale, (PH, PW), sampling, aligned)`` -> ``RoiAlign`` (opset 16) with
  ``mode="avg"``, the batch index column as ``batch_indices``, ``coordinate_transformation_mode``
  ``half_pixel`` for aligned=True (detectron2's ROIAlignV2) and ``output_half_pixel`` otherwise;
  a non-positive sampling ratio becomes ONNX's 0 (adaptive).
"""
import sys

import torch
from torch.onnx import register_custom_op_symbolic, symbolic_helper

__all__ = ["OPSET", "register_onnx_symbolics"]

OPSET = 16  # RoiAlign's coordinate_transformation_mode needs opset 16


def _const(g, values, dtype=torch.int64):
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


@symbolic_helper.parse_args("v", "v", "f")
def _nms(g, boxes, scores, iou_threshold):
    axis0 = _const(g, [0])
    boxes = g.op("Unsqueeze", boxes, axis0)
    scores = g.op("Unsqueeze", g.op("Unsqueeze", scores, axis0), axis0)
    selected = g.op("NonMaxSuppression", boxes, scores, _const(g, [sys.maxsize]),
                    _const(g, [iou_threshold], torch.float32))
    box_index = g.op("Gather", selected, _const(g, [2]), axis_i=1)
    return g.op("Squeeze", box_index, _const(g, [1]))


@symbolic_helper.parse_args("v", "v", "f", "is", "i", "b")
def _roi_align(g, features, rois, spatial_scale, output_size, sampling_ratio, aligned):
    batch = g.op("Squeeze", g.op("Gather", rois, _const(g, [0]), axis_i=1), _const(g, [1]))
    batch = g.op("Cast", batch, to_i=7)  # INT64
    boxes = g.op("Gather", rois, _const(g, [1, 2, 3, 4]), axis_i=1)
    return g.op("RoiAlign", features, boxes, batch,
                coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
                mode_s="avg", output_height_i=output_size[0], output_width_i=output_size[1],
                sampling_ratio_i=max(sampling_ratio, 0), spatial_scale_f=spatial_scale)


def register_onnx_symbolics() -> None:
    """Register the two translations (idempotent)."""
    register_custom_op_symbolic("sephnet_d2::nms", _nms, OPSET)
    register_custom_op_symbolic("sephnet_d2::roi_align", _roi_align, OPSET)
