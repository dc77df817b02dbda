"""Backbones of the portable core (detectron2.modeling.backbone).

Importing this package registers ``build_resnet_backbone``, ``build_resnet_fpn_backbone`` and
``build_retinanet_resnet_fpn_backbone`` in :data:`BACKBONE_REGISTRY`.
"""

from .build import BACKBONE_REGISTRY, build_backbone  # noqa: F401  isort:skip

from .backbone import Backbone
from .fpn import (
    FPN,
    LastLevelMaxPool,
    LastLevelP6P7,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from .resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_resnet_backbone,
    make_stage,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
