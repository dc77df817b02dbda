"""Meta-architectures (detectron2.modeling.meta_arch): the registry, ``build_model`` and the
R-CNN family. Importing this package registers ``GeneralizedRCNN`` and ``ProposalNetwork``."""
from .build import META_ARCH_REGISTRY, build_model
from .rcnn import GeneralizedRCNN, ProposalNetwork

__all__ = ["META_ARCH_REGISTRY", "build_model", "GeneralizedRCNN", "ProposalNetwork"]
