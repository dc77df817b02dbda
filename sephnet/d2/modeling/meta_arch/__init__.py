"""Meta-architectures (detectron2.modeling.meta_arch): the registry, ``build_model``, the
R-CNN family and the dense (one-stage) detectors. Importing this package registers
``GeneralizedRCNN``, ``ProposalNetwork`` and ``RetinaNet``. As in detectron2 v0.6, ``FCOS``
lives in ``meta_arch.fcos`` only and is built from keyword arguments (no config entry point)."""
from .build import META_ARCH_REGISTRY, build_model
from .dense_detector import DenseDetector
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet

__all__ = [
    "META_ARCH_REGISTRY",
    "build_model",
    "DenseDetector",
    "GeneralizedRCNN",
    "ProposalNetwork",
    "RetinaNet",
]
