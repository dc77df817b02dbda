"""``ShapeSpec``: the static description of a feature map passed between model builders.

Backbones report one ``ShapeSpec`` per output feature and heads read them to size their
layers, because ``nn.Module`` has no shape inference of its own.
"""
from collections import namedtuple
from typing import Optional


class ShapeSpec(namedtuple("_ShapeSpec", ["channels", "height", "width", "stride"])):
    """Channels, spatial size and stride of a tensor; every field is optional (``None``).

    Attributes:
        channels (int | None): number of channels C of an NCHW tensor.
        height (int | None): spatial height H, when fixed.
        width (int | None): spatial width W, when fixed.
        stride (int | None): total stride of the feature map relative to the input image.
    """

    def __new__(
        cls,
        channels: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        stride: Optional[int] = None,
    ) -> "ShapeSpec":
        return super().__new__(cls, channels, height, width, stride)
