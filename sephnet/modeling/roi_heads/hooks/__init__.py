"""ROI hooks (``SEPH_ROI_HOOK_REGISTRY``, chosen by ``MODEL.SEPH.ROI_HOOK.NAME``): transforms
of the pooled ROI features before the box head; importing this package registers them
(:mod:`.roi_hooks`)."""
from sephnet.modeling.roi_heads.hooks import roi_hooks  # noqa: F401
