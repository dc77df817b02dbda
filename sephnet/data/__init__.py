"""sephnet's own datasets and training-data augmentations.

Importing this package registers ``shapes_train``/``shapes_val`` and ``clutter_train``/``clutter_val``
(both generated on first use).
"""
from .augmented_mapper import AugmentedDatasetMapper
from .clutter import CLUTTER_CLASSES, ClutterParams, ensure_clutter, generate_clutter, register_clutter
from .occlusion import CutOut, RandomErase
from .photometric import PhotometricDistortion
from .shapes import SHAPES_CLASSES, ShapesParams, ensure_shapes, generate_shapes, register_shapes
from .train_loader import build_train_loader

register_shapes()
register_clutter()

__all__ = [
    "AugmentedDatasetMapper",
    "CLUTTER_CLASSES",
    "ClutterParams",
    "CutOut",
    "PhotometricDistortion",
    "RandomErase",
    "SHAPES_CLASSES",
    "ShapesParams",
    "build_train_loader",
    "ensure_clutter",
    "generate_clutter",
    "register_clutter",
    "ensure_shapes",
    "generate_shapes",
    "register_shapes",
]
