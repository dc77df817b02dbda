"""sephnet's meta-architectures; importing this package registers them in META_ARCH_REGISTRY."""
from sephnet.modeling.meta_arch.detr import SephDETR
from sephnet.modeling.meta_arch.two_way_rcnn import SephGeneralizedRCNN

__all__ = ["SephDETR", "SephGeneralizedRCNN"]
