"""The FCOS-style head (RetinaNet towers + centerness) built from ``MODEL.RETINANET``, shared
by ``SephFCOS`` and ``SephATSS``."""
from typing import List

from torch import nn

from sephnet.backend import FCOSHead, ShapeSpec

__all__ = ["build_centerness_head"]


def _group_norm_32(channels: int) -> nn.Module:
    """detectron2's "GN" (32 groups). Given as a callable because detectron2 v0.6's
    RetinaNetHead probes its norm with one channel, which GroupNorm(32, 1) refuses on current
    torch; the probe alone gets a single group."""
    return nn.GroupNorm(32 if channels >= 32 else 1, channels)


def build_centerness_head(cfg, input_shape: List[ShapeSpec]) -> FCOSHead:
    """``FCOSHead`` on the levels ``input_shape`` with ``MODEL.RETINANET.NUM_CLASSES``,
    ``NUM_CONVS`` tower convs as wide as the input, ``NORM`` and ``PRIOR_PROB``."""
    retina = cfg.MODEL.RETINANET
    norm = _group_norm_32 if retina.NORM == "GN" else retina.NORM
    return FCOSHead(
        input_shape=input_shape,
        conv_dims=[input_shape[0].channels] * retina.NUM_CONVS,
        num_classes=retina.NUM_CLASSES,
        norm=norm,
        prior_prob=retina.PRIOR_PROB,
    )
