"""Box heads: per-region feature extractors that sit between the ROI pooler and the box predictor.

A box head maps pooled region features ``[R, C, S, S]`` to per-region features (either a
flat ``[R, D]`` vector after the fc layers or ``[R, C', S, S]`` when it has convs only).
Heads are registered in :data:`ROI_BOX_HEAD_REGISTRY` and built by :func:`build_box_head`
from ``cfg.MODEL.ROI_BOX_HEAD.NAME``.
"""
from typing import Callable, List, Union

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
from torch import nn

from sephnet.d2.config import configurable
from sephnet.d2.layers import Conv2d, ShapeSpec, get_norm
from sephnet.d2.utils.registry import Registry

__all__ = ["FastRCNNConvFCHead", "build_box_head", "ROI_BOX_HEAD_REGISTRY"]

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
Box heads turning pooled region features into per-region features for the box predictor.
Each entry is called as ``obj(cfg, input_shape)`` with the pooled feature's ShapeSpec.
"""


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Sequential):
    """Stack of 3x3 convs (conv -> norm -> ReLU) followed by fc layers (fc -> ReLU).

    Topology (children in execution order, which is also the ``state_dict`` order)::

        [R, C, S, S] -> conv1 .. convN -> flatten -> fc1, fc_relu1 .. fcM, fc_relu(M) -> [R, D]

    ``flatten`` exists only when there is at least one fc layer. Children are registered in the
    order they run because ``forward`` simply iterates over the sequence.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: List[int],
        fc_dims: List[int],
        conv_norm: Union[str, Callable[[int], nn.Module]] = "",
    ):
        """
        Args:
            input_shape: shape of the pooled region feature (channels, height, width).
            conv_dims: output channels of each 3x3 conv, in order.
            fc_dims: output size of each fc layer, in order.
            conv_norm: norm for the convs, a name understood by :func:`get_norm` or a callable
                ``channels -> nn.Module``; "" means no norm (the convs then keep their bias).
        """
        super().__init__()
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError(
                "FastRCNNConvFCHead needs at least one conv or fc layer; got conv_dims=[] and "
                "fc_dims=[] (check MODEL.ROI_BOX_HEAD.NUM_CONV / NUM_FC)."
            )

        channels, height, width = input_shape.channels, input_shape.height, input_shape.width
        # Plain lists (not registered twice): handles on the conv and fc layers, as in detectron2.
        self.conv_norm_relus: List[nn.Module] = []
        self.fcs: List[nn.Module] = []
        for idx, out_channels in enumerate(conv_dims, start=1):
            conv = Conv2d(
                channels,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, out_channels),
                activation=nn.ReLU(),
            )
            self.add_module(f"conv{idx}", conv)
            self.conv_norm_relus.append(conv)
            channels = out_channels

        flat_size = None
        for idx, out_features in enumerate(fc_dims, start=1):
            if idx == 1:
                self.add_module("flatten", nn.Flatten())
                in_features = int(np.prod([channels, height, width]))
            else:
                in_features = flat_size
            fc = nn.Linear(in_features, out_features)
            self.add_module(f"fc{idx}", fc)
            self.add_module(f"fc_relu{idx}", nn.ReLU())
            self.fcs.append(fc)
            flat_size = out_features

        for conv in self.conv_norm_relus:
            weight_init.c2_msra_fill(conv)
        for fc in self.fcs:
            weight_init.c2_xavier_fill(fc)

        if flat_size is None:
            self._output_shape = ShapeSpec(channels=channels, height=height, width=width)
        else:
            self._output_shape = ShapeSpec(channels=flat_size)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [head.FC_DIM] * head.NUM_FC,
            "conv_norm": head.NORM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: pooled region features, float ``[R, C, S, S]``.

        Returns:
            ``[R, fc_dims[-1]]`` when the head has fc layers, else ``[R, conv_dims[-1], S, S]``.
        """
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        """ShapeSpec of :meth:`forward`'s output: ``channels`` only for a flat output,
        ``channels``/``height``/``width`` for a conv-only head."""
        return self._output_shape


def build_box_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the box head named by ``cfg.MODEL.ROI_BOX_HEAD.NAME`` for pooled features of
    shape ``input_shape``."""
    return ROI_BOX_HEAD_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.NAME)(cfg, input_shape)
