"""sephnet's meta-architectures; importing this package registers them in META_ARCH_REGISTRY."""
from sephnet.modeling.meta_arch.atss import SephATSS
from sephnet.modeling.meta_arch.detr import SephDETR
from sephnet.modeling.meta_arch.fcos import SephFCOS
from sephnet.modeling.meta_arch.ssd import SephSSD
from sephnet.modeling.meta_arch.two_way_rcnn import SephGeneralizedRCNN

__all__ = ["SephATSS", "SephDETR", "SephFCOS", "SephGeneralizedRCNN", "SephSSD"]
