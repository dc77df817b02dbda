"""sephnet's own datasets. Importing this package registers ``shapes_train``/``shapes_val`` and
``clutter_train``/``clutter_val`` (both generated on first use)."""
from .clutter import CLUTTER_CLASSES, ClutterParams, ensure_clutter, generate_clutter, register_clutter
from .shapes import SHAPES_CLASSES, ShapesParams, ensure_shapes, generate_shapes, register_shapes

register_shapes()
register_clutter()

__all__ = [
    "CLUTTER_CLASSES",
    "ClutterParams",
    "ensure_clutter",
    "generate_clutter",
    "register_clutter",
    "SHAPES_CLASSES",
    "ShapesParams",
    "ensure_shapes",
    "generate_shapes",
    "register_shapes",
]
