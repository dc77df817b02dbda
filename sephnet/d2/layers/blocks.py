"""Building-block base classes for CNN backbones.

``CNNBlockBase`` records a block's (in_channels, out_channels, stride) contract, which
backbones read to chain blocks and compute output shapes, and can freeze itself.
"""
import fvcore.nn.weight_init as weight_init
import torch
from torch import nn

from .batch_norm import FrozenBatchNorm2d, get_norm
from .wrappers import Conv2d

__all__ = ["CNNBlockBase", "DepthwiseSeparableConv2d"]


class CNNBlockBase(nn.Module):
    """A block mapping Tensor[N, in_channels, H, W] to Tensor[N, out_channels, H/stride, W/stride].

    Attributes:
        in_channels (int), out_channels (int), stride (int): the block's contract.
        Subclasses take the same three arguments in their ``__init__``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """Stop training this block: all parameters get ``requires_grad=False`` and every
        BatchNorm inside becomes a ``FrozenBatchNorm2d``. Returns the block itself."""
        for param in self.parameters():
            param.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k depthwise conv (``self.depthwise``) followed by a 1x1 conv (``self.pointwise``).

    Each conv has its own optional norm (``norm1``/``norm2``, any :func:`get_norm` value;
    a conv with a norm has no bias) and activation. Both convs get Caffe2 MSRA init.

    Forward: Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H', W'].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        dilation: int = 1,
        *,
        norm1=None,
        activation1=None,
        norm2=None,
        activation2=None,
    ):
        super().__init__()
        self.depthwise = Conv2d(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=not norm1,
            norm=get_norm(norm1, in_channels),
            activation=activation1,
        )
        self.pointwise = Conv2d(
            in_channels,
            out_channels,
            kernel_size=1,
            bias=not norm2,
            norm=get_norm(norm2, out_channels),
            activation=activation2,
        )
        weight_init.c2_msra_fill(self.depthwise)
        weight_init.c2_msra_fill(self.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))
