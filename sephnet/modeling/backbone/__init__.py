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
from sephnet.modeling.backbone import hooks  # noqa: E402,F401  (registers the backbone hooks)
from sephnet.modeling.backbone.hooked_backbone import (  # noqa: E402,F401
    HookedBackbone,
    build_seph_hooked_fpn_backbone,
)
from sephnet.modeling.backbone.tf_fpn import (  # noqa: E402,F401
    TFStyleFPN,
    build_seph_tf_fpn_backbone,
)
from sephnet.modeling.backbone.bifpn import BiFPN, build_seph_bifpn_backbone  # noqa: E402,F401
from sephnet.modeling.backbone.two_way_fpn import (  # noqa: E402,F401
    TwoWayFPN,
    build_seph_two_way_fpn_backbone,
)
from sephnet.modeling.backbone.vgg import VGG16, build_seph_vgg16_backbone  # noqa: E402,F401
from sephnet.modeling.backbone.ssd_extras import (  # noqa: E402,F401
    SSDBackbone,
    build_seph_ssd_backbone,
)
from sephnet.modeling.backbone.detnet import (  # noqa: E402,F401
    DetNet,
    DetNetFPN,
    build_seph_detnet_backbone,
    build_seph_detnet_fpn_backbone,
)
from sephnet.modeling.backbone.pafpn import PAFPN, build_seph_pafpn_backbone  # noqa: E402,F401
from sephnet.modeling.backbone.asff import ASFF, build_seph_asff_backbone  # noqa: E402,F401
from sephnet.modeling.backbone.nas_fpn import NASFPN, build_seph_nas_fpn_backbone  # noqa: E402,F401
