"""The backbone registry and ``build_backbone``."""

from typing import Optional

from sephnet.d2.layers import ShapeSpec
from sephnet.d2.utils.registry import Registry

from .backbone import Backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Backbone builders.

A registered object is called as ``obj(cfg, input_shape)`` with a config node and the
input's :class:`ShapeSpec`, and must return a :class:`Backbone`.
"""


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: config node.
        input_shape: input spec; defaults to ``ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))``.

    Raises:
        TypeError: if the registered builder does not return a :class:`Backbone`.
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"MODEL.BACKBONE.NAME={name!r} built a {type(backbone).__name__}, expected a Backbone"
        )
    return backbone
