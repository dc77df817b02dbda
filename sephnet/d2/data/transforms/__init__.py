"""Transforms and augmentations (detectron2.data.transforms).

Exports fvcore's transforms (``Transform``, ``TransformList``, ``HFlipTransform``,
``VFlipTransform``, ``NoOpTransform``, ``CropTransform``, ...) together with the core's
own transforms and augmentations, all under one namespace as detectron2 does.
"""
from fvcore.transforms.transform import Transform, TransformList  # noqa: F401  (first, as upstream)
from fvcore.transforms.transform import *  # noqa: F401,F403

from .transform import *  # noqa: F401,F403
from .augmentation import *  # noqa: F401,F403
from .augmentation_impl import *  # noqa: F401,F403

__all__ = [k for k in globals().keys() if not k.startswith("_")]
