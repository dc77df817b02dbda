"""sephnet's own datasets and training-data augmentations.

Importing this package registers ``shapes_train``/``shapes_val``.
"""
from .augmented_mapper import AugmentedDatasetMapper
from .occlusion import CutOut, RandomErase
from .photometric import PhotometricDistortion
from .shapes import SHAPES_CLASSES, ShapesParams, ensure_shapes, generate_shapes, register_shapes
from .train_loader import build_train_loader

register_shapes()

__all__ = [
    "AugmentedDatasetMapper",
    "CutOut",
    "PhotometricDistortion",
    "RandomErase",
    "SHAPES_CLASSES",
    "ShapesParams",
    "build_train_loader",
    "ensure_shapes",
    "generate_shapes",
    "register_shapes",
]
