"""sephnet's backbone builders; importing this package registers them in BACKBONE_REGISTRY."""
from sephnet.modeling.backbone.seph_fpn import (
    TOP_BLOCKS,
    LastLevelStridedConvs,
    build_seph_resnet_fpn_backbone,
    make_top_block,
)

__all__ = [
    "TOP_BLOCKS",
    "LastLevelStridedConvs",
    "build_seph_resnet_fpn_backbone",
    "make_top_block",
]
