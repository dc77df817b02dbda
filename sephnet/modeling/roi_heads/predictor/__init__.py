"""The box predictor (``SEPH_BOX_PREDICTOR_REGISTRY``): output layers (:mod:`.box_predictor`),
the IoU branch (:mod:`.iou_branch`), ROI box coders (:mod:`.box_coders`,
``SEPH_BOX_CODER_REGISTRY``) and the builder that joins them (:mod:`.build_predictor`).
Importing this package registers all of them.
"""
from sephnet.modeling.roi_heads.predictor import box_coders  # noqa: F401
from sephnet.modeling.roi_heads.predictor import box_predictor  # noqa: F401
