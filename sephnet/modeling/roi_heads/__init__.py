"""sephnet's ROI heads and their parts; importing this package registers all of them.

* ``roi_heads.py`` (``SephStandardROIHeads``), ``cascade.py``, ``ge_roi_heads.py``: ROI heads
  (detectron2's ``ROI_HEADS_REGISTRY``); ``mask_head.py``: the mask head
  (``ROI_MASK_HEAD_REGISTRY``);
* ``box_heads/``: box heads (``SEPH_BOX_HEAD_REGISTRY``);
* ``predictor/``: output layers, IoU branch, box coders (``SEPH_BOX_PREDICTOR_REGISTRY``,
  ``SEPH_BOX_CODER_REGISTRY``);
* ``poolers/``: the multi-scale ROI pooler; ``hooks/``: ROI hooks (``SEPH_ROI_HOOK_REGISTRY``);
* ``decoupled_features.py``: the types passed between pooler, hook, box head and predictor.
"""
from sephnet.modeling.roi_heads import box_heads  # noqa: F401
from sephnet.modeling.roi_heads import predictor  # noqa: F401
from sephnet.modeling.roi_heads import hooks  # noqa: F401
from sephnet.modeling.roi_heads import mask_head  # noqa: F401
from sephnet.modeling.roi_heads.roi_heads import SephStandardROIHeads
from sephnet.modeling.roi_heads import cascade  # noqa: F401  (SephCascadeROIHeads)
from sephnet.modeling.roi_heads import ge_roi_heads  # noqa: F401  (SephGEROIHeads)

__all__ = ["SephStandardROIHeads"]
