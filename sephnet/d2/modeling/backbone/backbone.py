"""The abstract ``Backbone``: a module mapping an image batch to named multi-scale features."""

from abc import ABCMeta, abstractmethod
from typing import Dict

from torch import nn

from sephnet.d2.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Base class of feature extractors.

    ``forward(x)`` takes an (N, C, H, W) tensor and returns ``dict[str, Tensor]`` of feature
    maps. Subclasses either override :meth:`output_shape` or set ``_out_features`` (names),
    ``_out_feature_channels`` and ``_out_feature_strides`` (dicts keyed by name), from which
    the default :meth:`output_shape` is built.
    """

    def __init__(self):
        super().__init__()

    @abstractmethod
    def forward(self, *args, **kwargs) -> Dict:
        """Return ``dict[str, Tensor]``: feature name (e.g. "res2", "p3") -> (N, C, H', W')."""

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this (0 = no constraint).

        Encoder/decoder backbones with lateral connections (e.g. FPN) need it so that
        top-down and bottom-up maps line up.
        """
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """``dict[str, ShapeSpec]``: channels and stride of every output feature."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
