"""sephnet's own datasets. Importing this package registers ``shapes_train``/``shapes_val``."""
from .shapes import SHAPES_CLASSES, ShapesParams, ensure_shapes, generate_shapes, register_shapes

register_shapes()

__all__ = ["SHAPES_CLASSES", "ShapesParams", "ensure_shapes", "generate_shapes", "register_shapes"]
