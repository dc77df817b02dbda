"""sephnet's ROI-head parts; importing this package registers all of them.

* box heads (``SEPH_BOX_HEAD_REGISTRY``): :mod:`.box_heads`, :mod:`.shared_conv_head`,
  :mod:`.upstream_box_head`;
* the box predictor (``SEPH_BOX_PREDICTOR_REGISTRY``): :mod:`.box_predictor`;
* the mask head (detectron2's ``ROI_MASK_HEAD_REGISTRY``): :mod:`.mask_head`;
* ``SephStandardROIHeads`` (detectron2's ``ROI_HEADS_REGISTRY``): :mod:`.roi_heads`, which
  also registers the ROI samplers (``SEPH_ROI_SAMPLER_REGISTRY``).
"""
from sephnet.modeling.roi_heads import box_heads  # noqa: F401
from sephnet.modeling.roi_heads import shared_conv_head  # noqa: F401
from sephnet.modeling.roi_heads import norm_fc_head  # noqa: F401
from sephnet.modeling.roi_heads import upstream_box_head  # noqa: F401
from sephnet.modeling.roi_heads import box_predictor  # noqa: F401
from sephnet.modeling.roi_heads import mask_head  # noqa: F401
from sephnet.modeling.roi_heads.roi_heads import SephStandardROIHeads

__all__ = ["SephStandardROIHeads"]
from sephnet.modeling.roi_heads import cascade  # noqa: F401,E402  (SephCascadeROIHeads)
from sephnet.modeling.roi_heads import ge_roi_heads  # noqa: F401,E402  (SephGEROIHeads)
from sephnet.modeling.roi_heads import roi_hooks  # noqa: F401,E402  (SEPH_ROI_HOOK_REGISTRY)
from sephnet.modeling.roi_heads import context_attention_heads  # noqa: F401,E402  (V5-V7 heads)
from sephnet.modeling.roi_heads import size_expert_head  # noqa: F401,E402  (V9 head)
from sephnet.modeling.roi_heads import valid_conv_head  # noqa: F401,E402  (V3 head)
from sephnet.modeling.roi_heads import iou_attention_head  # noqa: F401,E402  (V4 head)
