"""Models of the portable core (``detectron2.modeling``).

Importing this package registers every built-in backbone, proposal generator, ROI head,
box head and mask head, and re-exports the names detectron2 v0.6 exports here (minus the
out-of-scope keypoint, semantic/panoptic and mmdet pieces).
"""
from sephnet.d2.layers import ShapeSpec

from .anchor_generator import ANCHOR_GENERATOR_REGISTRY, build_anchor_generator
from .backbone import (
    BACKBONE_REGISTRY,
    FPN,
    Backbone,
    ResNet,
    ResNetBlockBase,
    build_backbone,
    build_resnet_backbone,
    make_stage,
)
from .meta_arch import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    ProposalNetwork,
    RetinaNet,
    build_model,
)
from .postprocessing import detector_postprocess
from .proposal_generator import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_proposal_generator,
    build_rpn_head,
)
from .roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    FastRCNNOutputLayers,
    ROIHeads,
    StandardROIHeads,
    build_box_head,
    build_mask_head,
    build_roi_heads,
)
from .test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA

__all__ = [k for k in globals().keys() if k != "ShapeSpec" and not k.startswith("_")]
