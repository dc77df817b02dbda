"""Layers of the portable core (``detectron2.layers`` v0.6 subset).

Rotated boxes and ASPP are not part of the core; ``nms``, ``batched_nms``, ``roi_align``
and the deformable convolutions use torchvision's kernels when they are usable and
otherwise equivalent PyTorch implementations.
"""
from .batch_norm import CycleBatchNormList, FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm, get_norm
from .blocks import CNNBlockBase, DepthwiseSeparableConv2d
from .deform_conv import DeformConv, ModulatedDeformConv
from .losses import ciou_loss, diou_loss
from .mask_ops import paste_masks_in_image
from .nms import batched_nms, nms
from .roi_align import ROIAlign, roi_align
from .shape_spec import ShapeSpec
from .wrappers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    cat,
    cross_entropy,
    empty_input_loss_func_wrapper,
    interpolate,
    move_device_like,
    nonzero_tuple,
    shapes_to_tensor,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
